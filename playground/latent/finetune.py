"""One resumable fine-tuning loop for the networks built on top of ``tiny_sd`` (the 9-channel inpainting
U-Net, the Canny ControlNet): progress bar, AdamW with warm-up + cosine decay, gradient clipping, an EMA
of the weights (what ships), a resume file saved every ``save_every`` steps, a training-time budget.

The caller supplies the lesson-specific part, ``loss_fn(step, gen) -> (loss, {name: float})``: it draws
its batch from the generator ``gen`` (a pure function of (seed, stage, step), :func:`step_generator`),
so a run killed at any point and resumed ends with the weights of an uninterrupted run.

Shared data helpers: :func:`scene_images` (fresh seeded training scenes) and :func:`encode_scaled`
(z_0 = scaling_factor · sample of q(z|x), the frozen autoencoder — exactly what the pipelines denoise).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.training import ema_update, load_resume, optimise, save_resume
from ..data import scenes
from .train import ema_decay, lr_factor, step_generator, to_model_range

LossFn = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class FinetuneConfig:
    steps: int
    batch: int = 32
    lr: float = 1e-4
    warmup: int = 100
    min_lr_factor: float = 0.1
    ema: float = 0.999
    grad_clip: float = 1.0
    max_minutes: float = 40.0          # training-time budget (the loop stops there even if steps remain)
    log_every: int = 50
    save_every: int = 50
    seed: int = 0
    stage: int = 3                     # mixed into every step's generator (tiny_sd's own stages are 1 and 2)

    def __post_init__(self) -> None:
        assert min(self.steps, self.batch, self.log_every, self.save_every) >= 1
        assert 0.0 <= self.ema < 1.0 and self.lr > 0


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(module)
    out.requires_grad_(False)
    return out.eval()


def scene_images(n: int, seed: int, step: int, size: int = 64, split: str = "train") -> scenes.SceneBatch:
    """``n`` fresh scenes for step ``step`` (seeded by (seed, step)); images in [0, 1]."""
    return scenes.render_dataset(n, seed=seed * 1_000_003 + step + 17, size=size, split=split)


@torch.no_grad()
def encode_scaled(vae: torch.nn.Module, images01: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """z_0 = s · z, z ~ q(z|x) (or its mean when ``gen`` is None), x = images in [0, 1] mapped to [-1, 1];
    s = ``vae.config.scaling_factor`` (LDM §3.1: unit-variance latents)."""
    post = vae.encode(to_model_range(images01)).latent_dist
    z = post.mean if gen is None else post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
    return z * vae.config.scaling_factor


def finetune(name: str, trainable: dict[str, torch.nn.Module], loss_fn: LossFn, cfg: FinetuneConfig,
             resume_path: Path, progress: bool = True, stop_after: int | None = None,
             monitor: Callable[[dict[str, torch.nn.Module]], dict[str, float]] | None = None,
             monitor_every: int = 0, origin: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Train the modules of ``trainable`` on ``loss_fn`` for ``cfg.steps`` steps (or ``cfg.max_minutes``).

    Returns ``{"steps", "wall_minutes", "history", "ema": {name: EMA module}}``, or None when
    ``stop_after`` steps of this invocation ran out first (call again to resume). ``monitor(ema)`` runs
    every ``monitor_every`` steps and at the end; its figures go into the history rows. ``origin`` (what the run
    starts from, e.g. the base model's weights hash) is saved with the state: a state saved with another origin
    is not resumed, the run starts over."""
    params = [p for m in trainable.values() for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    ema = {k: frozen_copy(m) for k, m in trainable.items()}
    st = load_resume(resume_path)
    if st is not None and st.get("origin") != origin:
        st = None
    step, elapsed, history = 0, 0.0, []
    if st is not None:
        for k, m in trainable.items():
            m.load_state_dict(st["model"][k])
            ema[k].load_state_dict(st["ema"][k])
        opt.load_state_dict(st["opt"])
        step, elapsed, history = st["step"], st["elapsed"], st["history"]

    def save() -> None:
        save_resume(resume_path, model={k: m.state_dict() for k, m in trainable.items()},
                    ema={k: m.state_dict() for k, m in ema.items()}, opt=opt.state_dict(), step=step,
                    elapsed=elapsed, history=history, origin=origin)

    bar = tqdm(total=cfg.steps, initial=step, desc=name, disable=not progress, dynamic_ncols=True)
    window: list[dict[str, float]] = []
    left = stop_after
    while step < cfg.steps and elapsed < cfg.max_minutes * 60:
        if left is not None and left <= 0:
            save()
            bar.close()
            return None
        t0 = time.perf_counter()
        for m in trainable.values():
            m.train()
        loss, extra = loss_fn(step, step_generator(cfg.seed, cfg.stage, step))
        optimise(opt, params, loss, cfg.lr * lr_factor(step, cfg.warmup, cfg.steps, cfg.min_lr_factor), cfg.grad_clip)
        decay = ema_decay(step, cfg.ema)
        for k, m in trainable.items():
            ema_update(ema[k], m, decay)
        step += 1
        elapsed += time.perf_counter() - t0
        window.append({"loss": float(loss.detach()), **extra})
        bar.update(1)
        last = step == cfg.steps
        if step % cfg.log_every == 0 or last:
            row = {"step": step, **{k: sum(w[k] for w in window) / len(window) for k in window[0]},
                   "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 2)}
            if monitor is not None and monitor_every and (step % monitor_every == 0 or last):
                row.update(monitor(ema))
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", min=f"{elapsed / 60:.1f}", refresh=False)
            window = []
        if left is not None:
            left -= 1
        if step % cfg.save_every == 0:
            save()
    bar.close()
    if window:
        history.append({"step": step, **{k: sum(w[k] for w in window) / len(window) for k in window[0]},
                        "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 2)})
    save()
    return {"steps": step, "wall_minutes": round(elapsed / 60, 2), "history": history, "ema": ema}
