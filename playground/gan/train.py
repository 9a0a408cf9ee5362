"""Training for the five digit GANs: one resumable, deterministic command with a progress bar.

    python -m playground train gan_wgangp      # presets: gan_mlp, gan_dcgan, gan_wgan, gan_wgangp, gan_cgan

Per iteration: ``n_critic`` discriminator/critic updates, then one generator update; the WGAN
clips the critic's weights after each update, WGAN-GP adds the gradient penalty instead. Both
real and generated digits pass through the same random shift (DiffAugment, Zhao et al. 2020), so
the discriminator cannot memorise 4,000 digits. The generator's weights are averaged (EMA); every
few epochs the EMA generator's Fréchet distance to the *validation* digits picks the shipped one.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.checkpoint import save_weights, write_history, write_json
from ..core.settings import get_settings
from ..core.training import ema_update, load_resume, save_resume
from ..data import mnist
from ..eval.classifier import load_classifier
from ..eval.metrics import class_entropy, features_and_preds, frechet_distance
from .losses import bce_losses, gradient_penalty, wgan_losses
from .model import GANConfig, build


@dataclass
class GANTrainConfig:
    model: GANConfig
    loss: str = "bce"                 # bce | wgan | wgangp
    epochs: int = 100
    batch_size: int = 64
    optimizer: str = "adam"           # adam | rmsprop
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1
    clip: float = 0.01                # WGAN weight clipping
    gp_lambda: float = 10.0           # WGAN-GP
    aux_class_weight: float = 0.0     # AC-GAN auxiliary classification loss (conditional models only)
    augment_shift: int = 2            # DiffAugment translation (pixels), 0 = off
    ema: float = 0.995                # EMA of G (half-life ~140 generator steps)
    select_every: int = 5             # epochs between FD checks of the EMA generator
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.loss in {"bce", "wgan", "wgangp"} and self.optimizer in {"adam", "rmsprop"}


PRESETS: dict[str, GANTrainConfig] = {
    "gan_mlp": GANTrainConfig(GANConfig(kind="mlp"), epochs=200),
    "gan_dcgan": GANTrainConfig(GANConfig(kind="dcgan"), epochs=80),
    "gan_wgan": GANTrainConfig(GANConfig(kind="wgan"), loss="wgan", optimizer="rmsprop", lr_g=1e-4, lr_d=1e-4,
                               n_critic=5, epochs=200),
    "gan_wgangp": GANTrainConfig(GANConfig(kind="wgangp"), loss="wgangp", lr_g=1e-4, lr_d=1e-4, betas=(0.5, 0.9),
                                 n_critic=5, epochs=100),
    "gan_cgan": GANTrainConfig(GANConfig(kind="cgan"), epochs=150, aux_class_weight=1.0),
}


def preset(name: str, **overrides) -> GANTrainConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown GAN preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def _opt(cfg: GANTrainConfig, params, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=cfg.betas)


def _batches(n: int, bs: int, gen: torch.Generator):
    """Endless minibatch indices: successive slices of fresh random permutations."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):
            yield perm[i:i + bs]


def _selection_score(row: dict) -> float:
    """Lower is better: the validation Fréchet distance, times (2 - accuracy) for the cGAN so that an
    epoch that draws the wrong digits cannot win on image statistics alone (accuracy judged by the
    evaluation classifier on generated digits only; no test digit is involved)."""
    return row["val_frechet"] * (2.0 - row.get("requested_class_accuracy", 1.0))


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    return mnist.random_shift(x, gen, shift) if shift > 0 else x


@torch.no_grad()
def recalibrate_batchnorm(g: torch.nn.Module, cfg: GANConfig, seed: int, batches: int = 20, bs: int = 256) -> None:
    """Recompute the BatchNorm statistics of an averaged (EMA) generator from its own activations.

    The EMA weights are not the live weights, so the live model's running means/variances do not
    fit them (samples turn to noise); a cumulative average over fresh z fixes that
    (the "BN recalibration" of Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training")."""
    norms = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                                   # cumulative moving average
    gen = torch.Generator().manual_seed(seed)
    g.train()
    for _ in range(batches):
        z = torch.randn(bs, cfg.noise_dim, generator=gen)
        labels = torch.randint(0, cfg.num_classes, (bs,), generator=gen) if cfg.conditional else None
        g(z, labels) if labels is not None else g(z)
    for m, mom in zip(norms, saved):
        m.momentum = mom
    g.eval()


@torch.no_grad()
def sample_digits(g: torch.nn.Module, cfg: GANConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n digits in [0, 1] (and their labels for the cGAN: i % 10) from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg.noise_dim, generator=gen)
    labels = torch.arange(n) % cfg.num_classes if cfg.conditional else None
    g.eval()
    x = g(z, labels) if labels is not None else g(z)
    return (x + 1) / 2, labels


def train(name: str, cfg: GANTrainConfig, out_dir: Path | None = None, resume: bool = True,
          progress: bool = True, stop_after: int | None = None) -> dict:
    out_dir = out_dir or get_settings().checkpoints_dir / name
    runs = out_dir.parent.parent / "runs" / name
    torch.manual_seed(cfg.seed)
    g, d = build(cfg.model)
    g_ema, _ = build(cfg.model)
    g_ema.load_state_dict(g.state_dict())
    g_ema.requires_grad_(False)
    opt_g, opt_d = _opt(cfg, g.parameters(), cfg.lr_g), _opt(cfg, d.parameters(), cfg.lr_d)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = mnist.digits("trainval")
    x_all, y_all = data.x * 2 - 1, data.y                                    # to [-1, 1]
    clf = load_classifier(out_dir.parent / "classifier")
    val_feats, _ = features_and_preds(clf, mnist.digits("val").x)
    history: list[dict] = []
    best = {"fd": math.inf, "epoch": 0, "g": None, "d": None}
    start, elapsed = 0, 0.0
    st = load_resume(runs / "last.pt") if resume else None
    if st is not None:
        g.load_state_dict(st["g"]), d.load_state_dict(st["d"]), g_ema.load_state_dict(st["g_ema"])
        opt_g.load_state_dict(st["opt_g"]), opt_d.load_state_dict(st["opt_d"])
        gen.set_state(st["gen"]), torch.set_rng_state(st["torch_rng"])
        history, start, elapsed, best = st["history"], st["epoch"], st["elapsed"], st["best"]
    nz, cond = cfg.model.noise_dim, cfg.model.conditional
    bs = cfg.batch_size
    bar = tqdm(range(start, cfg.epochs), initial=start, total=cfg.epochs, desc=name, disable=not progress,
               dynamic_ncols=True)
    steps_per_epoch = len(x_all) // bs                                  # generator updates per epoch
    for epoch in bar:
        t0 = time.perf_counter()
        g.train(), d.train()
        batches = _batches(len(x_all), bs, gen)
        sums = {"d_loss": 0.0, "g_loss": 0.0, "wasserstein": 0.0, "gp": 0.0}
        steps = 0
        for _ in range(steps_per_epoch):
            for _k in range(cfg.n_critic):                                  # --- discriminator / critic
                idx = next(batches)
                real, labels = x_all[idx], y_all[idx]
                z = torch.randn(bs, nz, generator=gen)
                with torch.no_grad():
                    fake = g(z, labels) if cond else g(z)
                extra = (labels,) if cond else ()
                real_a, fake_a = _augment(real, gen, cfg.augment_shift), _augment(fake, gen, cfg.augment_shift)
                aux = cond and cfg.aux_class_weight > 0
                if aux:
                    (out_r, cls_r), out_f = d.forward_with_classes(real_a, labels), d(fake_a, labels)
                else:
                    out_r, out_f = d(real_a, *extra), d(fake_a, *extra)
                if cfg.loss == "bce":
                    d_loss, _ = bce_losses(out_r, out_f)
                else:
                    d_loss, _ = wgan_losses(out_r, out_f)
                    if cfg.loss == "wgangp":
                        gp = gradient_penalty(d, real_a, fake_a, gen, *extra)
                        d_loss = d_loss + cfg.gp_lambda * gp
                        sums["gp"] += float(gp.detach()) / cfg.n_critic
                if aux:                                                     # AC-GAN: classify real digits
                    d_loss = d_loss + cfg.aux_class_weight * F.cross_entropy(cls_r, labels)
                w_est = float((out_r.mean() - out_f.mean()).detach())
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                if cfg.loss == "wgan":
                    for p in d.parameters():
                        p.data.clamp_(-cfg.clip, cfg.clip)
            z = torch.randn(bs, nz, generator=gen)                          # --- generator
            labels = torch.randint(0, cfg.model.num_classes, (bs,), generator=gen) if cond else None
            fake = g(z, labels) if cond else g(z)
            fake_a = _augment(fake, gen, cfg.augment_shift)
            if cond and cfg.aux_class_weight > 0:
                out_f, cls_f = d.forward_with_classes(fake_a, labels)
            else:
                out_f = d(fake_a, *((labels,) if cond else ()))
            g_loss = bce_losses(out_f, out_f)[1] if cfg.loss == "bce" else -out_f.mean()
            if cond and cfg.aux_class_weight > 0:                           # ... and be classified as asked
                g_loss = g_loss + cfg.aux_class_weight * F.cross_entropy(cls_f, labels)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            ema_update(g_ema, g, cfg.ema)
            sums["d_loss"] += float(d_loss.detach())
            sums["g_loss"] += float(g_loss.detach())
            sums["wasserstein"] += w_est if cfg.loss != "bce" else 0.0
            steps += 1
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}, "seconds": elapsed}
        if (epoch + 1) % cfg.select_every == 0 or epoch + 1 == cfg.epochs:
            recalibrate_batchnorm(g_ema, cfg.model, seed=epoch)
            samples, labels = sample_digits(g_ema, cfg.model, 1000, seed=12345)
            feats, preds = features_and_preds(clf, samples)
            row["val_frechet"] = frechet_distance(feats, val_feats)
            row["class_entropy"] = class_entropy(preds)
            if labels is not None:
                row["requested_class_accuracy"] = float((preds == labels.numpy()).mean())
            score = _selection_score(row)
            if score < best["fd"]:
                best = {"fd": score, "epoch": epoch + 1,
                        "g": {k: v.clone() for k, v in g_ema.state_dict().items()},
                        "d": {k: v.clone() for k, v in d.state_dict().items()}}
        history.append(row)
        bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}",
                        fd=f"{row.get('val_frechet', float('nan')):.1f}", H=f"{row.get('class_entropy', float('nan')):.2f}",
                        acc=f"{row.get('requested_class_accuracy', float('nan')):.2f}", best=f"{best['fd']:.1f}@{best['epoch']}")
        save_resume(runs / "last.pt", g=g.state_dict(), d=d.state_dict(), g_ema=g_ema.state_dict(),
                    opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), gen=gen.get_state(),
                    torch_rng=torch.get_rng_state(), history=history, epoch=epoch + 1, elapsed=elapsed, best=best)
        if stop_after is not None and epoch + 1 - start >= stop_after:
            return {"name": name, "interrupted_at_epoch": epoch + 1}
    bar.close()
    save_weights(out_dir, best["g"], "generator.safetensors")
    save_weights(out_dir, best["d"], "discriminator.safetensors")
    keys = sorted({k for r in history for k in r})
    write_history(out_dir / "history.csv", [{k: r.get(k, "") for k in keys} for r in history])
    chosen = next(r for r in history if r["epoch"] == best["epoch"])
    record = {"name": name, "selected_epoch": best["epoch"], "selection_score": best["fd"],
              "selected_val_frechet": chosen["val_frechet"], "selected_val_entropy": chosen["class_entropy"],
              **({"selected_val_accuracy": chosen["requested_class_accuracy"]} if cond else {}),
              "epochs_run": len(history), "wall_seconds": round(elapsed, 1), "torch_threads": torch.get_num_threads()}
    cfg_dict = {k: v for k, v in asdict(cfg).items() if k != "model"}
    write_json(out_dir / "config.json", {"model": cfg.model.to_dict(), "train": cfg_dict})
    write_json(out_dir / "training.json", record)
    return record
