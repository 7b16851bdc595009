"""benchmarks/engine_check.py tells an engine that computes the model and samples from it from one whose sampler
draws tokens that top-p excludes (what the sampler's u = 1 noise did: such a token's reported log-probability
is its own, so the log-probability comparison alone passes it)."""

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from engine_check import check_random_export  # noqa: E402

from codemill.serve import sampling  # noqa: E402

SETTINGS = dict(preset="tiny", device="cpu", attention="sdpa", cuda_graphs=False, prompts=2, tokens=48, n=6)


def test_a_sound_engine_passes_with_every_sampled_token_in_the_nucleus():
    result = check_random_export(**SETTINGS)
    assert result["ok"], result
    assert result["sampled_tokens"] == 6 * (16 + 32) and result["sampled_outside_nucleus"] == 0


def test_a_sampler_that_draws_outside_the_nucleus_fails_the_check(monkeypatch):
    real, rng = sampling.uniform_noise, torch.Generator().manual_seed(0)

    def faulty(keys, vocab):  # in every row one random column's noise is u = 1 (it wins where top-p excluded it)
        u = real(keys, vocab)
        u[torch.arange(len(keys)), torch.randint(0, vocab, (len(keys),), generator=rng)] = 1.0
        return u

    monkeypatch.setattr(sampling, "uniform_noise", faulty)
    result = check_random_export(**SETTINGS)
    assert not result["ok"] and result["sampled_outside_nucleus"] >= 3, result
    assert result["share_off"] == 0.0, "the log-probabilities still agree: only the nucleus check sees the fault"
