"""SplitMix64 (Steele et al.), the one 64-bit mixer codemill uses: LSH band keys, benchmark n-gram hashes,
shuffle keys. One definition serves numpy arrays and numba kernels alike (uint64 arithmetic wraps)."""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(h):
    """SplitMix64's finaliser on uint64 (a numpy array or, compiled, a scalar): a bijection that spreads every
    input bit over all output bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The whole SplitMix64 step on a uint64 array: consecutive inputs give independent-looking outputs."""
    with np.errstate(over="ignore"):
        return mix64(x + GOLDEN_GAMMA)


mix64_kernel = njit(cache=True, inline="always")(mix64)
