"""Choosing the next token for a batch of rows, each with its own settings and random stream.

Every row's randomness comes from a counter-based generator keyed by (its seed, its step): the noise for
vocabulary entry j is a hash of (seed, step, j). A row's draw therefore depends on nothing else in the
batch, the same seed gives the same output whatever runs beside it, and the whole batch samples in a few
vectorised kernels (no per-row generator calls). Sampling uses the exponential race: argmax(p_j / E_j) with
E_j ~ Exp(1) picks j with probability p_j (the same trick vLLM's sampler uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from codemill.serve.transfer import to_device

MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_FMIX1, _FMIX2 = 0x85EBCA6B, 0xC2B2AE35  # MurmurHash3's 32-bit finaliser constants
MAX_LOGPROBS = 5                           # OpenAI's completions API allows 0..5 top logprobs
# Below this a temperature is greedy: logits / 1e-39 overflow to inf and the softmax to NaN.
MIN_TEMPERATURE = 1e-5


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for 0 <= x < 2^32 in int64, in one multiply that never overflows 63 bits: a constant of
    2^31 or more is taken as c - 2^32 (the same residue mod 2^32), so |x * c| < 2^63 either way."""
    return (x * (c - (1 << 32) if c >= 1 << 31 else c)) & MASK32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, _FMIX1)
    x = x ^ (x >> 13)
    x = _mul32(x, _FMIX2)
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """[B] 64-bit seeds and [B] steps -> [B] 32-bit keys, one per (seed, step)."""
    s_lo, s_hi = seeds & MASK32, (seeds >> 32) & MASK32
    return _fmix32(_fmix32(_fmix32(s_lo) ^ s_hi) ^ _mul32(steps & MASK32, _GOLDEN))


# Uniform floats from the hash's top UNIT_BITS bits: (m + 0.5) / 2^UNIT_BITS for m < 2^UNIT_BITS needs 24
# significant bits, exactly what a float32 holds, so every value lies strictly inside (0, 1). With 24 bits the
# largest, 2^24 - 0.5, rounded up to 2^24: u = 1, noise -log(u) = 0, and a column of probability 0 raced 0/0 =
# NaN, which argmax takes for the maximum (a uniformly random token, about once in 320 sampled tokens).
UNIT_BITS = 23


def unit_interval(bits: torch.Tensor) -> torch.Tensor:
    """32-bit hashes -> float32 in (0, 1), both ends excluded, from their top UNIT_BITS bits."""
    return ((bits >> (32 - UNIT_BITS)).to(torch.float32) + 0.5) / float(1 << UNIT_BITS)


def sequence_seed(base_seed: int, index: int) -> int:
    """The seed of sample (or beam) `index` of a request seeded `base_seed`: a stream of its own."""
    return (base_seed + index * 0x9E3779B97F4A7C15) % (1 << 63)


def column_bits(keys: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Keys and vocabulary columns (broadcast together) -> the 32-bit hash each column's noise comes from."""
    return _fmix32(_mul32(columns, _GOLDEN) ^ keys)


def uniform_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B] keys -> [B, vocab] floats in (0, 1), a pure function of (key, column)."""
    cols = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    return unit_interval(column_bits(keys[:, None], cols[None, :]))


@dataclass(frozen=True)
class RowParams:
    temperature: float = 1.0    # below MIN_TEMPERATURE: greedy
    top_k: int = 0              # 0 = off
    top_p: float = 1.0
    seed: int = 0
    logprobs: int | None = None  # how many top logprobs to return (None: no logprobs)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE

    @property
    def adjusts_logits(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)


@dataclass
class Choice:
    tokens: torch.Tensor                 # [B] chosen ids (on the logits' device: nothing waits for the host)
    logprobs: torch.Tensor | None        # [B] their log-probabilities under the model, or None
    top_ids: torch.Tensor | None         # [B, k] the k most likely ids
    top_logprobs: torch.Tensor | None    # [B, k]


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, any_top_k: bool | None = None,
                  any_top_p: bool | None = None) -> torch.Tensor:
    """Set to -inf what top-k (0 = off) and top-p (nucleus, 1 = off) exclude, row by row; the most likely
    token always stays. `any_top_k`/`any_top_p`: whether any row uses them, where the caller knows it on the host
    (asking the device tensors waits for the GPU)."""
    vocab = logits.shape[-1]
    if any_top_k if any_top_k is not None else bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab)).clamp(1, vocab)
        kth = torch.sort(logits, dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if any_top_p if any_top_p is not None else bool((top_p < 1).any()):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the tokens strictly more likely
        drop_sorted = before >= top_p[:, None]
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def adjust_logits(logits: torch.Tensor, params: list[RowParams], outputs: list[list[int]] | None) -> torch.Tensor:
    """Penalties and biases as OpenAI defines them (and vLLM applies them): for each token already generated
    (the prompt does not count), logit -= frequency_penalty * its count + presence_penalty * (count > 0); then
    logit += logit_bias[token]. logits [B, vocab] float32, changed in place."""
    device, vocab = logits.device, logits.shape[-1]
    rows = [i for i, p in enumerate(params) if p.presence_penalty or p.frequency_penalty]
    if rows and outputs is not None:
        longest = max(max((len(outputs[i]) for i in rows), default=0), 1)
        ids = torch.full((len(rows), longest), vocab, dtype=torch.long)
        for j, i in enumerate(rows):
            ids[j, :len(outputs[i])] = torch.tensor(outputs[i], dtype=torch.long)
        counts = torch.zeros(len(rows), vocab + 1, device=device)
        counts.scatter_add_(1, ids.to(device, non_blocking=True), torch.ones(ids.shape, device=device))
        counts = counts[:, :vocab]
        freq = to_device([params[i].frequency_penalty for i in rows], torch.float32, device)[:, None]
        pres = to_device([params[i].presence_penalty for i in rows], torch.float32, device)[:, None]
        index = to_device(rows, torch.long, device)
        logits[index] -= freq * counts + pres * (counts > 0).float()
    bias_rows, bias_ids, bias_vals = [], [], []
    for i, p in enumerate(params):
        for token, value in p.logit_bias:
            if token < vocab:
                bias_rows.append(i)
                bias_ids.append(token)
                bias_vals.append(value)
    if bias_rows:
        logits.index_put_((to_device(bias_rows, torch.long, device), to_device(bias_ids, torch.long, device)),
                          to_device(bias_vals, torch.float32, device), accumulate=True)
    return logits


def sample(logits: torch.Tensor, params: list[RowParams], steps: list[int], valid_vocab: int,
           outputs: list[list[int]] | None = None) -> Choice:
    """logits [B, vocab] (any float dtype) -> the next token of each row; `outputs` (each row's generated tokens
    so far) feed the presence/frequency penalties. Logprobs are the model's (log-softmax of the raw logits over
    the whole vocabulary, as the training loss computes them, before penalties and biases, as vLLM returns
    them); the choice never picks the padding rows of the embedding (ids ≥ valid_vocab)."""
    device = logits.device
    want = max((p.logprobs for p in params if p.logprobs is not None), default=None)
    adjusted = any(p.adjusts_logits for p in params)
    if want is None and not adjusted and all(p.greedy for p in params):  # plain greedy: one kernel, one copy
        return Choice(logits[:, :valid_vocab].argmax(dim=-1), None, None, None)
    logits = logits.float()
    raw = logits
    if valid_vocab < logits.shape[-1] or adjusted:
        logits = logits.clone()
        logits[:, valid_vocab:] = float("-inf")
    if adjusted:
        adjust_logits(logits, params, outputs)
    temps = to_device([0.0 if p.greedy else p.temperature for p in params], torch.float32, device)
    greedy = temps == 0
    chosen = logits.argmax(dim=-1)
    if not all(p.greedy for p in params):  # asked of the host: the device's answer would wait for the GPU
        scaled = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        scaled = filter_logits(scaled, to_device([min(p.top_k, logits.shape[-1]) for p in params], torch.long, device),
                               to_device([p.top_p for p in params], torch.float32, device),
                               any(p.top_k > 0 for p in params), any(p.top_p < 1 for p in params))
        probs = torch.softmax(scaled, dim=-1)
        keys = row_keys(to_device([p.seed & ((1 << 63) - 1) for p in params], torch.long, device),
                        to_device(steps, torch.long, device))
        race = probs / -torch.log(uniform_noise(keys, logits.shape[-1]))
        chosen = torch.where(greedy, chosen, race.argmax(dim=-1))
    if want is None:
        return Choice(chosen, None, None, None)
    logprobs = torch.log_softmax(raw, dim=-1)
    top = torch.topk(logprobs[:, :valid_vocab], k=max(want, 1), dim=-1)  # real tokens only
    picked = logprobs.gather(1, chosen[:, None])[:, 0]
    return Choice(chosen, picked, top.indices, top.values)
