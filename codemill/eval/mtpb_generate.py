"""MTPB generation, turn by turn (SPEC §10): every (test case, sample) keeps its own history; each round asks
the model for the next turn of every unfinished one, from its whole history, within the problem's
`max_gen_length`, and appends the truncated completion. Histories that are the same text (all n samples of a
test case in the first turn, and any that agree later) are one prompt asked for that many samples, so the
samples stay independent draws and no prompt is sent twice."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from codemill.eval import mtpb
from codemill.eval.mtpb import MtpbProblem
from codemill.eval.mtpb_samples import MtpbSample

log = logging.getLogger("codemill.eval")

# (prompts, samples per prompt, token budget per prompt, stop strings per prompt, seed per prompt) -> for each
# prompt its completions.
TurnGenerator = Callable[[list[str], list[int], list[int], list[list[str]], list[int]], list[list[str]]]


def prompt_seed(seed: int, prompt: str) -> int:
    """A prompt's seed from its text: the same history samples the same way however the round is ordered."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()[:4], "big") >> 1


def generate_samples(problems: dict[str, MtpbProblem], cases: list[tuple[str, int]], modes: list[str], n: int,
                     generate: TurnGenerator, seed: int = 0, max_tokens: int | None = None) -> list[MtpbSample]:
    """n samples of every (task_id, test_index) in every mode, each a finished list of truncated turns.
    `max_tokens` caps every turn's budget (mtpb.max_tokens)."""
    samples = [MtpbSample(tid, t, s, [], mode) for mode in modes for tid, t in cases for s in range(n)]
    round_no = 0
    while True:
        todo = [s for s in samples if len(s.turns) < mtpb.n_turns(problems[s.task_id], s.mode)]
        if not todo:
            return samples
        round_no += 1
        started = time.time()
        groups: dict[tuple[str, str, int], list[MtpbSample]] = {}
        for s in todo:
            p = problems[s.task_id]
            key = (mtpb.turn_prompt(p, s.test_index, s.mode, s.turns), s.mode, mtpb.max_tokens(p, s.mode, max_tokens))
            groups.setdefault(key, []).append(s)
        keys = list(groups)
        texts = generate([k[0] for k in keys], [len(groups[k]) for k in keys], [k[2] for k in keys],
                         [list(mtpb.STOPS[k[1]]) for k in keys], [prompt_seed(seed, k[0]) for k in keys])
        for key, outs in zip(keys, texts):
            if len(outs) != len(groups[key]):
                raise RuntimeError(f"asked for {len(groups[key])} completions of a prompt, got {len(outs)}")
            for s, text in zip(groups[key], outs):
                s.turns.append(mtpb.truncate(text, s.mode))
        log.info("eval: MTPB round %d: %d unfinished samples, %d distinct prompts, %.0f s", round_no, len(todo),
                 len(keys), time.time() - started)
