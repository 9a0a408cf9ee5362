"""Helpers shared by every trainer: an atomic, resumable training state (never in checkpoints/)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_resume(path: Path, **state: Any) -> None:
    """Write the resume state atomically, so an interruption never leaves a corrupt file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_resume(path: Path) -> dict[str, Any] | None:
    """The saved state (tensors, numbers, dicts only: ``weights_only=True``), or None."""
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model (Polyak averaging; decay 0 copies the model).
    Buffers (BatchNorm statistics) follow the live model."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def optimise(opt: torch.optim.Optimizer, params: Any, loss: torch.Tensor, lr: float, grad_clip: float) -> None:
    """One optimiser step at learning rate ``lr``: backward, clip the gradient norm to ``grad_clip`` (if > 0), step."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
