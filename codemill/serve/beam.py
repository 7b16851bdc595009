"""Beam search for one request: `num_beams` hypotheses, each in its own KV-cache slot.

Scores are sums of the model's log-probabilities; a finished hypothesis (it produced end-of-text, or
reached max_tokens) is ranked by score / length^length_penalty, length counting its generated tokens
(Hugging Face's convention). Each step expands every beam over the vocabulary, keeps the 2·num_beams best
candidates (so num_beams survive even when some end), and stops once no running beam can still beat the
worst of num_beams finished ones (Hugging Face's `early_stopping=False` rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float          # sum of log-probabilities
    ended: bool = False   # produced end-of-text (not counted in `tokens`)

    def ranked(self, length_penalty: float) -> float:
        length = max(len(self.tokens) + (1 if self.ended else 0), 1)
        return self.score / (length ** length_penalty)


@dataclass
class BeamSearch:
    num_beams: int
    max_tokens: int
    length_penalty: float
    eos_id: int | None
    valid_vocab: int
    beams: list[Hypothesis] = field(default_factory=list)
    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False

    def step(self, logprobs: torch.Tensor) -> list[int]:
        """logprobs [rows, vocab] of the running beams (one row, the prompt, at the first step) -> the parent
        row of each new beam. The new beams' last tokens are `self.beams[i].tokens[-1]`."""
        logprobs = logprobs.float()[:, :self.valid_vocab]
        base = torch.tensor([b.score for b in self.beams] or [0.0], dtype=torch.float32)
        totals = (base[:, None] + logprobs.cpu()).flatten()
        k = min(2 * self.num_beams, totals.numel())
        values, flat = torch.topk(totals, k)
        vocab = logprobs.shape[1]
        parents_tokens = self.beams or [Hypothesis([], 0.0)]
        new_beams: list[Hypothesis] = []
        parents: list[int] = []
        for value, idx in zip(values.tolist(), flat.tolist()):
            parent, token = divmod(idx, vocab)
            history = parents_tokens[parent].tokens
            if token == self.eos_id:
                self.finished.append(Hypothesis(list(history), value, ended=True))
                continue
            new_beams.append(Hypothesis(history + [token], value))
            parents.append(parent)
            if len(new_beams) == self.num_beams:
                break
        self.beams = new_beams
        self.finished.sort(key=lambda h: h.ranked(self.length_penalty), reverse=True)
        self.finished = self.finished[:self.num_beams]
        length = len(new_beams[0].tokens) if new_beams else 0
        if not new_beams or length >= self.max_tokens:
            self.finished.extend(new_beams)
            self.done = True
        elif len(self.finished) >= self.num_beams:
            best_running = max(b.score for b in new_beams) / (length ** self.length_penalty)
            self.done = best_running <= self.finished[-1].ranked(self.length_penalty)
        return parents

    def best(self, n: int) -> list[Hypothesis]:
        return sorted(self.finished, key=lambda h: h.ranked(self.length_penalty), reverse=True)[:n]
