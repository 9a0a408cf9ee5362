"""Per-request randomness: every sample comes from an explicit, seeded ``torch.Generator``.

The global RNG is never touched, so two visitors cannot disturb each other, and noise is drawn on
the CPU (as diffusers recommends) and moved to the device, so a seed means the same on every host.
"""
from __future__ import annotations

import torch


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def randn(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise of ``shape`` for ``seed``.

    Row ``i`` of the result depends only on ``(seed, i)``: row ``i`` is drawn from its own generator
    seeded ``seed + i``, so asking for 4 or 64 samples gives the same first 4.
    """
    n, *rest = shape
    rows = [torch.randn(tuple(rest), generator=make_generator(seed + i)) for i in range(n)]
    out = torch.stack(rows) if rows else torch.empty((0, *rest))
    return out.to(device)
