"""What the engine knows of each request and each of its sequences (the `n` samples, or the beams)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from codemill.serve.beam import BeamSearch
from codemill.serve.detok import TextState
from codemill.serve.sampling import RowParams


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 16             # 0: score the prompt only (echo + logprobs)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None      # top logprobs per token (0..5); None: none
    prompt_logprobs: bool = False    # logprobs of the prompt's tokens too (OpenAI's echo + logprobs)
    num_beams: int = 1
    length_penalty: float = 1.0
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()   # (token id, bias), sorted

    @property
    def num_seqs(self) -> int:
        return self.num_beams if self.num_beams > 1 else self.n


@dataclass
class TokenLogprob:
    token: int
    logprob: float | None
    top: list[tuple[int, float]]


@dataclass
class SequenceDelta:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]
    finish_reason: str | None = None   # "stop" | "length" once finished


@dataclass
class RequestMetrics:
    arrival: float
    admitted: float | None = None
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class RequestOutput:
    request_id: str
    deltas: list[SequenceDelta]
    finished: bool = False
    prompt_logprobs: list[TokenLogprob] | None = None
    metrics: RequestMetrics | None = None
    error: str | None = None     # the engine failed this request (the others go on)


Emit = Callable[[RequestOutput], None]


def merge_outputs(outs: list[RequestOutput]) -> RequestOutput:
    """Consecutive outputs of one request as one: each sequence's text, tokens and logprobs joined."""
    if len(outs) == 1:
        return outs[0]
    by_index: dict[int, SequenceDelta] = {}
    for out in outs:
        for d in out.deltas:
            if d.index not in by_index:
                by_index[d.index] = SequenceDelta(d.index, "", [], [])
            m = by_index[d.index]
            m.text += d.text
            m.token_ids = m.token_ids + d.token_ids
            m.logprobs = m.logprobs + d.logprobs
            m.finish_reason = d.finish_reason or m.finish_reason
    first = next((o.prompt_logprobs for o in outs if o.prompt_logprobs is not None), None)
    error = next((o.error for o in outs if o.error), None)
    return RequestOutput(outs[0].request_id, list(by_index.values()), outs[-1].finished, first, outs[-1].metrics,
                         error)


@dataclass(eq=False)
class Sequence:
    group: SequenceGroup
    index: int
    seed: int
    row: RowParams
    text: TextState
    tokens: list[int]                  # prompt + generated tokens the host has read
    pending: int = 0                   # tokens sampled on the device that the host has not read yet (0 or 1)
    num_computed: int = 0              # cache positions written (or being written by the step in flight)
    block_table: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    new_ids: list[int] = field(default_factory=list)
    new_logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Tokens so far, those in flight included."""
        return len(self.tokens) + self.pending

    @property
    def num_generated(self) -> int:
        return self.length - len(self.group.prompt)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def in_prefill(self) -> bool:
        """More than the last token still to feed: a prompt (or a preempted sequence's history) to prefill."""
        return self.num_computed < self.length - 1

    def outputs(self) -> list[int]:
        return self.tokens[len(self.group.prompt):]


@dataclass(eq=False)
class SequenceGroup:
    """One request: its prompt, parameters and sequences. Until its prompt is prefilled only the first sequence
    runs; then the others take copies of its block table (`forked`)."""

    id: str
    prompt: list[int]
    params: GenerationParams
    emit: Emit
    metrics: RequestMetrics
    seqs: list[Sequence] = field(default_factory=list)
    beam: BeamSearch | None = None
    forked: bool = False
    prompt_logprobs: list[TokenLogprob] | None = None
    prompt_logprobs_sent: bool = False
    aborted: bool = False

    @property
    def finished(self) -> bool:
        return self.aborted or (bool(self.seqs) and all(s.finished for s in self.seqs))

    def live(self) -> list[Sequence]:
        if not self.forked:
            return [self.seqs[0]] if not self.seqs[0].finished else []
        return [s for s in self.seqs if not s.finished]

    @property
    def needs_host_between_steps(self) -> bool:
        """Beams choose their parents on the host, and penalties count the tokens generated so far: their
        next step can only be scheduled once this one's tokens are read."""
        return self.beam is not None or bool(self.params.presence_penalty or self.params.frequency_penalty)
