"""The sampler's counter-based noise: exact 32-bit arithmetic in int64, and a stream that does not change (a changed
stream silently changes every seeded sample a user has recorded)."""

from __future__ import annotations

import torch

from codemill.serve import sampling
from codemill.serve.sampling import UNIT_BITS, RowParams, _mul32, row_keys, sample, uniform_noise, unit_interval

EDGES = [0, 1, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]


def test_mul32_is_multiplication_mod_2_to_32_for_every_constant_size():
    x = torch.tensor(EDGES + torch.randint(0, 2**32, (500,), generator=torch.Generator().manual_seed(0)).tolist())
    for c in (sampling._FMIX1, sampling._FMIX2, sampling._GOLDEN, 3, 2**31 - 1, 2**31, 2**32 - 1):
        assert _mul32(x, c).tolist() == [(int(v) * c) % 2**32 for v in x], c


def test_the_noise_stream_is_pinned():
    keys = row_keys(torch.tensor([0, 1, 2**63 - 1]), torch.tensor([0, 7, 2**31 - 1]))
    assert keys.tolist() == [0, 4006629162, 2085661452]
    noise = uniform_noise(keys, 52224)[:, [0, 1, 52223]]
    expected = [[5.960464477539063e-08, 0.07026690244674683, 0.872480571269989],
                [0.7729222178459167, 0.9866579174995422, 0.003727734088897705],
                [0.9885178208351135, 0.5472596287727356, 0.7026800513267517]]
    assert noise.tolist() == expected
    assert bool((uniform_noise(keys, 1000) > 0).all() and (uniform_noise(keys, 1000) < 1).all())


def test_every_hash_maps_strictly_inside_the_unit_interval_with_positive_noise():
    # All 2^UNIT_BITS values the top bits can take, with the low bits all zeros and all ones.
    top = torch.arange(1 << UNIT_BITS, dtype=torch.int64) << (32 - UNIT_BITS)
    for bits in (top, top | ((1 << (32 - UNIT_BITS)) - 1)):
        u = unit_interval(bits)
        assert bool((u > 0).all() and (u < 1).all())
        noise = -torch.log(u)
        assert bool((noise > 0).all() and torch.isfinite(noise).all())


def test_a_token_outside_the_nucleus_is_never_drawn_where_the_noise_is_most_extreme():
    # Seed 0 at step 84 hashes column 37,388 to 2^32 - 1's top 24 bits: with a 24-bit unit interval its noise was
    # -log(1) = 0 and, at probability 0 there, the race's 0/0 = NaN won the argmax (a random token).
    vocab, top = 52224, 5
    logits = torch.zeros(1, vocab)
    logits[0, top] = 20.0  # the nucleus of top-p 0.95 is this token alone at either temperature
    for temperature, top_p in ((0.2, 0.95), (0.8, 0.95), (0.2, 1.0)):
        choice = sample(logits, [RowParams(temperature=temperature, top_p=top_p, seed=0)], [84], vocab)
        assert choice.tokens.tolist() == [top], (temperature, top_p)


def _expected(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution a sampler must draw from, written out plainly: temperature, then top-k, then the nucleus
    (the smallest set of most likely tokens whose mass reaches top_p), renormalised."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    order = torch.argsort(probs, descending=True).tolist()
    keep, mass = [], 0.0
    for rank, j in enumerate(order):
        if (top_k and rank >= top_k) or mass >= top_p:
            break
        keep.append(j)
        mass += float(probs[j])
    out = torch.zeros_like(probs)
    out[keep] = probs[keep]
    return out / out.sum()


def test_draws_follow_the_filtered_distribution_and_nothing_outside_it():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -4.0])
    rows = 20_000
    for temperature, top_k, top_p in ((1.0, 0, 1.0), (0.8, 0, 0.95), (0.5, 3, 1.0), (1.3, 0, 0.6)):
        params = [RowParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=s) for s in range(rows)]
        drawn = sample(logits.expand(rows, -1).contiguous(), params, [3] * rows, len(logits)).tokens
        counts = torch.bincount(drawn, minlength=len(logits)).double()
        expected = _expected(logits, temperature, top_k, top_p) * rows
        assert bool((counts[expected == 0] == 0).all()), (temperature, top_k, top_p, counts.tolist())
        kept = expected > 0
        chi2 = float(((counts[kept] - expected[kept]) ** 2 / expected[kept]).sum())
        # 99.99th percentile of chi-square with at most 7 degrees of freedom: about 1 false alarm in 10,000 runs.
        assert chi2 < 29.9, (temperature, top_k, top_p, chi2, counts.tolist(), expected.tolist())


def test_a_rows_draws_at_successive_steps_are_independent():
    logits = torch.zeros(1, 4)
    rows, steps = 4_000, 2
    tokens = [sample(logits.expand(rows, -1).contiguous(), [RowParams(seed=s) for s in range(rows)], [t] * rows,
                     4).tokens for t in range(steps)]
    pairs = torch.bincount(tokens[0] * 4 + tokens[1], minlength=16).double()
    expected = rows / 16
    chi2 = float(((pairs - expected) ** 2 / expected).sum())
    assert chi2 < 44.3, (chi2, pairs.tolist())  # 99.99th percentile, 15 degrees of freedom
