"""The sampler's counter-based noise: exact 32-bit arithmetic in int64, and a stream that does not change (a changed
stream silently changes every seeded sample a user has recorded)."""

from __future__ import annotations

import torch

from codemill.serve import sampling
from codemill.serve.sampling import _mul32, row_keys, uniform_noise

EDGES = [0, 1, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]


def test_mul32_is_multiplication_mod_2_to_32_for_every_constant_size():
    x = torch.tensor(EDGES + torch.randint(0, 2**32, (500,), generator=torch.Generator().manual_seed(0)).tolist())
    for c in (sampling._FMIX1, sampling._FMIX2, sampling._GOLDEN, 3, 2**31 - 1, 2**31, 2**32 - 1):
        assert _mul32(x, c).tolist() == [(int(v) * c) % 2**32 for v in x], c


def test_the_noise_stream_is_pinned():
    keys = row_keys(torch.tensor([0, 1, 2**63 - 1]), torch.tensor([0, 7, 2**31 - 1]))
    assert keys.tolist() == [0, 4006629162, 2085661452]
    noise = uniform_noise(keys, 52224)[:, [0, 1, 52223]]
    expected = [[2.9802322387695312e-08, 0.07026687264442444, 0.8724806308746338],
                [0.7729222774505615, 0.9866578578948975, 0.0037277042865753174],
                [0.9885177612304688, 0.5472596883773804, 0.7026799917221069]]
    assert noise.tolist() == expected
    assert bool((uniform_noise(keys, 1000) > 0).all() and (uniform_noise(keys, 1000) < 1).all())
