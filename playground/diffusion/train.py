"""Training for the digit denoisers: one resumable, deterministic command with a progress bar.

    python -m playground train diffusion_unet      # presets: diffusion_unet, diffusion_dit

Per step (DDPM Algorithm 1): x_0 from the 4,000 training digits scaled to [-1, 1], t ~ U{0 … T-1},
ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (eq. 4), and the "simple" loss ||ε − ε̂_θ(x_t, t, y)||²
(eq. 14).
The label y is replaced by the null label with probability 10% (classifier-free guidance, Ho &
Salimans 2022 §3.2), so one network learns ε̂(x_t, y) and ε̂(x_t, ∅). AdamW with linear warm-up,
then a constant (DDPM's recipe) or cosine learning rate. An EMA of the weights is what ships.

The run stops after ``epochs`` or, at the end of the first epoch past ``max_minutes`` of training
time, whichever comes first (so a record can say "trained for N minutes"). Resume state lives in
``runs/<name>/last.pt`` (not committed); the checkpoint folder gets ``model.safetensors`` (EMA weights),
``config.json``, ``history.csv`` and ``training.json``.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.checkpoint import save_weights, write_history, write_json
from ..core.settings import get_settings
from ..core.training import ema_update, load_resume, save_resume
from ..data import mnist
from .model import DenoiserConfig, DiTConfig, UNetConfig, build, count_params
from .schedule import NoiseSchedule, make_schedule


@dataclass
class DiffusionTrainConfig:
    model: DenoiserConfig
    schedule: str = "linear"          # linear (the seed's) | cosine
    timesteps: int = 1000
    epochs: int = 200
    max_minutes: float = 0.0          # training-time budget (0 = none), checked at the end of each epoch
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"     # constant | cosine (over all epochs), both after linear warm-up
    warmup_steps: int = 200
    grad_clip: float = 1.0            # max global gradient norm (0 = off)
    ema: float = 0.999                # EMA decay (the shipped weights); warmed up as min(decay, (1+k)/(10+k))
    label_dropout: float = 0.1        # probability that a label becomes the null label (CFG)
    augment_shift: int = 0            # random whole-pixel shift of the training digits (0 = off)
    monitor_every: int = 5            # epochs between fixed-noise loss checks of the EMA model
    train_items: int = 0              # use only this many training digits, evenly spread (0 = all 4,000; tests)
    seed: int = 0
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.schedule in {"linear", "cosine"}, f"schedule must be linear or cosine, got {self.schedule!r}"
        assert self.lr_schedule in {"constant", "cosine"}, \
            f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}"
        assert 0.0 <= self.label_dropout < 1.0 and 0.0 <= self.ema < 1.0 and self.batch_size >= 1


PRESETS: dict[str, DiffusionTrainConfig] = {
    # batch 64: on the CPU the cost per image is flat from batch 32 up, so smaller batches buy more
    # updates per minute (62 per epoch); one epoch ≈ 20-25 s on two threads.
    # 130 epochs = 8,060 steps, 47.5 min of training here. (An earlier look at 120 epochs blamed the
    # net for incoherent guided samples; the culprit was DDIM clipping x̂_0 without re-deriving ε̂ —
    # see ``sampler.DDIMSampler``.)
    "diffusion_unet": DiffusionTrainConfig(UNetConfig(), epochs=130,
                                           notes="lean U-Net (32/64/128 at 28/14/7, attention at 7x7)"),
    # the DiT gets the U-Net's training time, counted on a quiet CPU (2 threads): an epoch takes 19 s
    # for the U-Net and 16 s for the DiT, so 130 × 19 / 16 ≈ 155 epochs. (Wall-clock budgets are
    # unfair here: anything else running on the 2 cores slows one run and not the other.)
    "diffusion_dit": DiffusionTrainConfig(DiTConfig(), epochs=155,
                                          notes="DiT, patch 4 (49 tokens), width 128, depth 6, adaLN-Zero; "
                                                "same training time as the U-Net"),
}


def preset(name: str, **overrides: Any) -> DiffusionTrainConfig:
    """A named configuration; model fields (e.g. ``channels``, ``depth``) may be overridden too."""
    if name not in PRESETS:
        raise KeyError(f"unknown diffusion preset {name!r}; choose from {sorted(PRESETS)}")
    base = PRESETS[name]
    model_fields = type(base.model).__dataclass_fields__
    model_over = {k: overrides.pop(k) for k in list(overrides) if k in model_fields and k not in {"kind"}}
    return replace(base, model=replace(base.model, **model_over), **overrides)


def schedule_for(cfg: DiffusionTrainConfig) -> NoiseSchedule:
    return make_schedule(cfg.schedule, cfg.timesteps)


def lr_factor(step: int, cfg: DiffusionTrainConfig, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then 1 (constant) or a cosine decay to 0 at ``total_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay(step: int, decay: float) -> float:
    """EMA warm-up (as diffusers' ``EMAModel``): min(decay, (1 + k) / (10 + k)) after k updates, so the
    average does not drag the random initial weights along for thousands of steps."""
    return min(decay, (1 + step) / (10 + step))


def diffusion_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
                   t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 14, L_simple = E ||ε − ε̂_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, y)||², averaged over pixels."""
    x_t = schedule.q_sample(x0, t, noise)
    return F.mse_loss(model(x_t, t, labels), noise)


def drop_labels(labels: torch.Tensor, p: float, null_label: int, gen: torch.Generator) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``p`` (CFG's joint training)."""
    drop = torch.rand(labels.shape, generator=gen) < p
    return torch.where(drop, torch.full_like(labels, null_label), labels)


@torch.no_grad()
def fixed_noise_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor,
                     seed: int, batch: int = 250) -> float:
    """L_simple on fixed (t, ε) draws: a low-variance curve to watch (the minibatch loss jumps with t)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, schedule.timesteps, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    model.eval()
    total = 0.0
    for i in range(0, len(x0), batch):
        sl = slice(i, i + batch)
        total += float(diffusion_loss(model, schedule, x0[sl], labels[sl], t[sl], noise[sl])) * len(x0[sl])
    return total / len(x0)


def training_digits(items: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4,000 training digits (``mnist.digits("trainval")``), or ``items`` of them spread over all
    classes (the file is sorted by label)."""
    data = mnist.digits("trainval")
    if not items or items >= len(data):
        return data.x, data.y
    idx = torch.linspace(0, len(data) - 1, items).round().long()
    return data.x[idx], data.y[idx]


def train(name: str, cfg: DiffusionTrainConfig, out_dir: Path | None = None, resume: bool = True,
          progress: bool = True, stop_after: int | None = None, runs_dir: Path | None = None) -> dict:
    """Train ``cfg`` into ``out_dir`` (default ``checkpoints/<name>``); returns the training record.

    ``stop_after`` ends this invocation after that many epochs (as an interruption would); calling again
    with ``resume`` continues exactly where it stopped."""
    out_dir = out_dir or get_settings().checkpoints_dir / name
    runs_dir = runs_dir or out_dir.parent.parent / "runs" / name
    torch.manual_seed(cfg.seed)
    model = build(cfg.model)
    ema = build(cfg.model)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    schedule = schedule_for(cfg)
    null = cfg.model.num_classes
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = training_digits(cfg.train_items)                          # [0, 1]; scaled per batch
    monitor = torch.arange(0, len(x_all), 8)                                 # 500 fixed training digits
    bs = cfg.batch_size
    steps_per_epoch = len(x_all) // bs                                      # the last partial batch is dropped
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {bs} is larger than the {len(x_all)} training digits")
    total_steps = steps_per_epoch * cfg.epochs
    history: list[dict] = []
    start, elapsed, step = 0, 0.0, 0
    st = load_resume(runs_dir / "last.pt") if resume else None
    if st is not None:
        model.load_state_dict(st["model"]), ema.load_state_dict(st["ema"]), opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"]), torch.set_rng_state(st["torch_rng"])
        history, start, elapsed, step = st["history"], st["epoch"], st["elapsed"], st["step"]
    bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, desc=name, disable=not progress,
               dynamic_ncols=True)
    budget_hit = bool(cfg.max_minutes) and elapsed >= cfg.max_minutes * 60
    for epoch in ([] if budget_hit else bar):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            x0 = x_all[idx]
            if cfg.augment_shift > 0:
                x0 = mnist.random_shift(x0, gen, cfg.augment_shift)
            x0 = x0 * 2 - 1                                                  # to [-1, 1]
            labels = drop_labels(y_all[idx], cfg.label_dropout, null, gen)
            t = torch.randint(0, schedule.timesteps, (bs,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            loss = diffusion_loss(model, schedule, x0, labels, t, noise)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * lr_factor(step, cfg, total_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema_update(ema, model, ema_decay(step, cfg.ema))
            step += 1
            loss_sum += float(loss.detach())
            bar.set_postfix(loss=f"{loss_sum / (i + 1):.4f}", step=step, refresh=False)
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "step": step, "loss": loss_sum / steps_per_epoch,
               "lr": opt.param_groups[0]["lr"], "seconds": round(elapsed, 2)}
        if cfg.monitor_every and ((epoch + 1) % cfg.monitor_every == 0 or epoch + 1 == cfg.epochs):
            row["ema_fixed_loss"] = fixed_noise_loss(ema, schedule, x_all[monitor] * 2 - 1, y_all[monitor],
                                                     seed=cfg.seed + 1)
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", ema=f"{row.get('ema_fixed_loss', float('nan')):.4f}",
                        min=f"{elapsed / 60:.1f}")
        save_resume(runs_dir / "last.pt", model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                    gen=gen.get_state(), torch_rng=torch.get_rng_state(), history=history, epoch=epoch + 1,
                    elapsed=elapsed, step=step)
        if stop_after is not None and epoch + 1 - start >= stop_after:
            bar.close()
            return {"name": name, "interrupted_at_epoch": epoch + 1}
        if cfg.max_minutes and elapsed >= cfg.max_minutes * 60:
            bar.write(f"{name}: time budget of {cfg.max_minutes:g} min reached after epoch {epoch + 1}")
            break
    bar.close()
    return _finish(name, cfg, ema, history, elapsed, step, out_dir)


def _finish(name: str, cfg: DiffusionTrainConfig, ema: torch.nn.Module, history: list[dict], elapsed: float,
            step: int, out_dir: Path) -> dict:
    """Write the shipped files: EMA weights, config, loss history and the training record."""
    save_weights(out_dir, ema.state_dict())
    keys = sorted({k for r in history for k in r}, key=lambda k: (k != "epoch", k))
    write_history(out_dir / "history.csv", [{k: r.get(k, "") for k in keys} for r in history])
    last = history[-1] if history else {}
    record = {"name": name, "kind": cfg.model.kind, "params": count_params(ema), "epochs_run": len(history),
              "steps": step, "final_loss": last.get("loss"), "wall_seconds": round(elapsed, 1),
              "wall_minutes": round(elapsed / 60, 1), "torch_threads": torch.get_num_threads()}
    fixed = [r["ema_fixed_loss"] for r in history if "ema_fixed_loss" in r]
    if fixed:
        record["final_ema_fixed_loss"] = fixed[-1]
    train_dict = {k: v for k, v in asdict(cfg).items() if k != "model"}
    write_json(out_dir / "config.json", {"model": cfg.model.to_dict(), "train": train_dict,
                                         "schedule": schedule_for(cfg).to_dict()})
    write_json(out_dir / "training.json", record)
    return record


def load_denoiser(folder: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, NoiseSchedule, dict]:
    """The shipped EMA network (eval mode), its noise schedule and its ``config.json``."""
    from ..core.checkpoint import load_weights, read_json
    from .model import config_from_dict

    config = read_json(folder / "config.json")
    if config is None:
        raise FileNotFoundError(f"no config.json in {folder}")
    model = build(config_from_dict(config["model"]))
    model.load_state_dict(load_weights(folder, device=device))
    sch = config.get("schedule", {"kind": "linear", "timesteps": 1000})
    return model.to(device).eval(), make_schedule(sch["kind"], sch["timesteps"]), config
