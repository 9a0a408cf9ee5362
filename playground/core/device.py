"""Device policy: the best available accelerator (cuda, then mps), else the CPU."""
from __future__ import annotations

import torch


def best_device(preference: str = "auto") -> torch.device:
    """Resolve ``auto|cpu|cuda|mps`` to a ``torch.device``; an unavailable request is an error."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("PLAYGROUND_DEVICE=cuda but no CUDA device is available")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("PLAYGROUND_DEVICE=mps but MPS is not available")
    return torch.device(preference)
