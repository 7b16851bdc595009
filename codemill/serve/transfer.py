"""Host values onto the device without waiting for it.

`torch.tensor(values, device="cuda")` copies and then synchronises the stream: the host waits for every kernel
queued before it (a whole forward pass, a whole step in flight), which undoes the engine's overlap of its host work
with the device's. A non-blocking copy from pageable memory is staged before the call returns, so the host list can
go at once and nothing waits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def to_device(values: Sequence, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A 1-D or nested list as a tensor on `device`, queued behind the stream's work instead of waiting for it."""
    host = torch.tensor(values, dtype=dtype)
    return host if torch.device(device).type == "cpu" else host.to(device, non_blocking=True)
