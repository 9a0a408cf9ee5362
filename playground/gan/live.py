"""A "GAN Lab"-style live GAN on 2-D points (Kahng et al. 2018), server side.

A learner watches a small generator G learn a 2-D distribution while the discriminator (critic) D
tries to tell real points from generated ones. Both are small MLPs; one training *step* is
``d_steps`` updates of D followed by one update of G.

Objectives (the formulas live in :mod:`playground.gan.losses`, re-exported here):

- Minimax game (Goodfellow et al. 2014, arXiv:1406.2661, eq. 1), with D = sigmoid(logit):
      min_G max_D  V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))].
  D minimises the binary cross-entropy with labels real = 1, fake = 0:
      L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))].
- Non-saturating generator loss (same paper, §3): early on D rejects fakes confidently and
  log(1 - D(G(z))) has vanishing gradient, so G instead minimises
      L_G = -E_z[log D(G(z))]   (= BCE(D(G(z)), 1)).
- Wasserstein GAN (Arjovsky et al. 2017, arXiv:1701.07875, eq. 3): a critic f without sigmoid,
  restricted to 1-Lipschitz functions, maximises E_x[f(x)] - E_z[f(G(z))], which then estimates the
  Wasserstein-1 distance W(P_r, P_g) (Kantorovich-Rubinstein duality, their eq. 2). Critic loss
  E_z[f(G(z))] - E_x[f(x)]; generator loss -E_z[f(G(z))].
- Gradient penalty (Gulrajani et al. 2017, arXiv:1704.00028, eq. 3 / Algorithm 1): the Lipschitz
  constraint is enforced softly with
      L = E[f(x̃)] - E[f(x)] + lambda * E_x̂[(||grad_x̂ f(x̂)||_2 - 1)^2],
      x̂ = eps x + (1 - eps) x̃,  eps ~ U[0, 1],  lambda = 10.
  Their Algorithm 1 uses Adam(1e-4, beta1 = 0, beta2 = 0.9) and 5 critic updates; for a live demo we
  use Adam(beta1 = 0.5, beta2 = 0.9) as in the authors' own toy-data script (gan_toy.py), larger
  learning rates (G 1e-3, D 3e-3), 3 critic updates and batches of 128: measured on the 8-Gaussian
  ring, this covers all modes in 1,800-4,300 generator steps for every seed tried (0-11), while
  beta1 = 0 missed the ring within 30 s for some seeds.
- BCE mode: Adam(beta1 = 0.5, beta2 = 0.999) for both nets, as in DCGAN (Radford et al. 2016, §4).

Everything random (initial weights, noise, data, interpolation) comes from explicit
``torch.Generator`` objects seeded from the config; the global RNG is never used. Rendering uses
numpy + PIL only, so one frame costs a few milliseconds.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ..core.errors import UserInputError
from ..core.seeding import make_generator
from ..core.validation import check_choice, check_float, check_int
from .losses import bce_losses, gradient_penalty, wgan_losses

__all__ = [
    "DATASETS",
    "LOSSES",
    "ARROWS",
    "RECOMMENDED",
    "GP_LAMBDA",
    "VIEW",
    "LiveConfig",
    "LiveGAN",
    "sample_data",
    "mixture_centres",
    "bce_losses",
    "wgan_losses",
    "gradient_penalty",
]

DATASETS = ("ring", "grid", "spiral", "moons", "custom")
LOSSES = ("bce", "wgan-gp")
ARROWS = ("motion", "gradient", "none")

VIEW = 3.0                 # the visible square is [-VIEW, VIEW]^2 (data coordinates)
GP_LAMBDA = 10.0           # Gulrajani et al. 2017, Algorithm 1
RING_RADIUS, RING_STD = 2.0, 0.07
GRID_STD = 0.05
CUSTOM_JITTER = 0.06
MAX_CUSTOM_POINTS = 5000
LOG_EVERY = 10             # one history row per LOG_EVERY steps (their mean)
MAX_STEPS_PER_CALL = 10_000

# Per-loss defaults for the fields left as None in LiveConfig (the UI can show these).
RECOMMENDED: dict[str, dict[str, Any]] = {
    "bce": {"lr_g": 1e-3, "lr_d": 1e-3, "d_steps": 1, "batch_size": 256, "betas": (0.5, 0.999)},
    "wgan-gp": {"lr_g": 1e-3, "lr_d": 3e-3, "d_steps": 3, "batch_size": 128, "betas": (0.5, 0.9)},
}

# Fixed sample sizes for the picture and the mode count (drawn once per reset, from their own seed).
N_SHOW_REAL, N_SHOW_FAKE, N_ARROWS, N_EVAL = 400, 400, 80, 2000
HEAT_RES = 60


# ----------------------------------------------------------------------------------------- data

def mixture_centres(name: str) -> tuple[np.ndarray, float]:
    """(centres (K, 2), std) of the Gaussian mixtures: ``ring`` (8 on a circle of radius 2) and
    ``grid`` (5 x 5 at -2..2)."""
    if name == "ring":
        ang = np.arange(8) * (2 * math.pi / 8)
        return np.stack([RING_RADIUS * np.cos(ang), RING_RADIUS * np.sin(ang)], 1).astype(np.float32), RING_STD
    if name == "grid":
        g = np.arange(-2, 3, dtype=np.float32)
        xx, yy = np.meshgrid(g, g, indexing="xy")
        return np.stack([xx.ravel(), yy.ravel()], 1), GRID_STD
    raise UserInputError(f"The dataset {name!r} is not a Gaussian mixture; only ring and grid have modes.")


def _check_points(points: Any) -> torch.Tensor:
    """The user's drawn points as a (k, 2) float tensor, each coordinate finite and within the view."""
    if points is None:
        raise UserInputError("Custom data: draw at least 2 points first.")
    if isinstance(points, (np.ndarray, torch.Tensor)):
        points = np.asarray(points, dtype=np.float64).tolist()
    try:
        pts = list(points)
    except TypeError:
        raise UserInputError("Custom data must be a list of (x, y) points.") from None
    if len(pts) < 2:
        raise UserInputError(f"Custom data: draw at least 2 points (got {len(pts)}).")
    if len(pts) > MAX_CUSTOM_POINTS:
        raise UserInputError(f"Custom data: at most {MAX_CUSTOM_POINTS} points, got {len(pts)}.")
    out = []
    for i, p in enumerate(pts):
        try:
            x, y = p
        except (TypeError, ValueError):
            raise UserInputError(f"Custom point {i} must be an (x, y) pair, got {p!r}.") from None
        out.append((check_float(x, f"custom point {i} x", -VIEW, VIEW),
                    check_float(y, f"custom point {i} y", -VIEW, VIEW)))
    return torch.tensor(out, dtype=torch.float32)


def sample_data(name: str, n: int, generator: torch.Generator,
                points: list[tuple[float, float]] | None = None) -> torch.Tensor:
    """``n`` points (n, 2) of the 2-D dataset ``name``, in data coordinates inside [-3, 3]^2.

    - ``ring``: 8 Gaussians (std 0.07) equally spaced on a circle of radius 2;
    - ``grid``: 25 Gaussians (std 0.05) on the integer grid {-2..2}^2;
    - ``spiral``: the 2-D Swiss roll of the WGAN-GP paper, t ~ U[1.5 pi, 4.5 pi],
      x = (t cos t, t sin t) scaled to radius 2.5, plus noise;
    - ``moons``: two interleaving half circles (as scikit-learn's make_moons) scaled to x in [-2, 2];
    - ``custom``: the user's ``points`` (at least 2, each within [-3, 3]^2), chosen uniformly and
      jittered with N(0, 0.06^2) noise.
    """
    name = check_choice(name, "dataset", DATASETS)
    n = check_int(n, "number of points", 1, 1_000_000)
    if name in ("ring", "grid"):
        c, std = mixture_centres(name)
        centres = torch.from_numpy(c)
        idx = torch.randint(len(centres), (n,), generator=generator)
        return centres[idx] + std * torch.randn(n, 2, generator=generator)
    if name == "spiral":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
        xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) * (2.5 / (4.5 * math.pi))
        return xy + 0.05 * torch.randn(n, 2, generator=generator)
    if name == "moons":
        u = math.pi * torch.rand(n, generator=generator)
        inner = torch.rand(n, generator=generator) < 0.5
        x = torch.where(inner, 1 - torch.cos(u), torch.cos(u))
        y = torch.where(inner, 0.5 - torch.sin(u), torch.sin(u))
        xy = (torch.stack([x, y], 1) - torch.tensor([0.5, 0.25])) * 1.3
        return xy + 0.06 * torch.randn(n, 2, generator=generator)
    pts = _check_points(points)
    idx = torch.randint(len(pts), (n,), generator=generator)
    return (pts[idx] + CUSTOM_JITTER * torch.randn(n, 2, generator=generator)).clamp(-VIEW, VIEW)


# --------------------------------------------------------------------------------------- config

@dataclass
class LiveConfig:
    """One live run. ``lr_g``, ``lr_d``, ``d_steps`` and ``batch_size`` left as None take the
    loss's :data:`RECOMMENDED` values; :meth:`validate` fills them in and checks every field."""

    dataset: str = "ring"
    loss: str = "wgan-gp"                # "bce" (non-saturating) | "wgan-gp"
    lr_g: float | None = None            # bce 1e-3, wgan-gp 1e-3
    lr_d: float | None = None            # bce 1e-3, wgan-gp 3e-3
    d_steps: int | None = None           # D updates per G update: bce 1, wgan-gp 3
    batch_size: int | None = None        # bce 256, wgan-gp 128 (3 critic updates per step)
    noise_dim: int = 8
    hidden: int = 64                     # width of each hidden layer (G and D)
    layers: int = 2                      # hidden layers (G and D)
    seed: int = 0
    max_steps: int = 20_000
    max_seconds: float = 120.0           # training compute time, measured by LiveGAN
    points: list[tuple[float, float]] | None = None   # custom dataset, data coordinates
    betas: tuple[float, float] | None = field(default=None, repr=False)  # Adam; from RECOMMENDED

    def validate(self) -> "LiveConfig":
        """A checked copy with the per-loss defaults filled in; raises :class:`UserInputError`."""
        loss = check_choice(self.loss, "loss", LOSSES)
        rec = RECOMMENDED[loss]
        dataset = check_choice(self.dataset, "dataset", DATASETS)
        points = None
        if dataset == "custom":
            points = [tuple(p) for p in _check_points(self.points).tolist()]
        return replace(
            self,
            dataset=dataset,
            loss=loss,
            lr_g=check_float(rec["lr_g"] if self.lr_g is None else self.lr_g, "generator learning rate", 1e-6, 1e-1),
            lr_d=check_float(rec["lr_d"] if self.lr_d is None else self.lr_d,
                             "discriminator learning rate", 1e-6, 1e-1),
            d_steps=check_int(rec["d_steps"] if self.d_steps is None else self.d_steps,
                              "discriminator steps per generator step", 1, 10),
            batch_size=check_int(rec["batch_size"] if self.batch_size is None else self.batch_size,
                                 "batch size", 8, 2048),
            noise_dim=check_int(self.noise_dim, "noise dimension", 1, 16),
            hidden=check_int(self.hidden, "hidden units", 4, 256),
            layers=check_int(self.layers, "hidden layers", 1, 4),
            seed=check_int(self.seed, "seed", 0, 2**32 - 1),
            max_steps=check_int(self.max_steps, "step budget", 1, 200_000),
            max_seconds=check_float(self.max_seconds, "time budget (seconds)", 0.1, 3600.0),
            points=points,
            betas=tuple(rec["betas"]) if self.betas is None else _check_betas(self.betas),
        )


def _check_betas(betas: Any) -> tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise UserInputError(f"Adam betas must be two numbers, got {betas!r}.") from None
    return check_float(b1, "Adam beta1", 0.0, 0.999), check_float(b2, "Adam beta2", 0.0, 0.9999)


# ------------------------------------------------------------------------------------- networks

def _mlp(sizes: list[int], generator: torch.Generator) -> nn.Sequential:
    """Linear layers with LeakyReLU(0.2) between them, initialised like ``nn.Linear``
    (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) but from ``generator`` instead of the global RNG."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.utils.skip_init(nn.Linear, a, b)
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.uniform_(-bound, bound, generator=generator)
        mods.append(lin)
        if i < len(sizes) - 2:
            mods.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*mods)


def _adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015); the fused kernel is ~3x faster than the loop for these tiny nets."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # builds without a fused CPU kernel
        return torch.optim.Adam(params, lr=lr, betas=betas)


# ---------------------------------------------------------------------------------------- colours

def _hex(h: str) -> np.ndarray:
    return np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


# diverging map for D: "looks fake" (blue) <- white -> "looks real" (orange)
_CMAP_STOPS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=np.float32)
_CMAP_COLS = np.stack([_hex("#3b7fbf"), _hex("#9cc6e4"), _hex("#f7f7f5"), _hex("#f6bf8a"), _hex("#e4761c")])
_REAL_FILL, _REAL_EDGE = (25, 25, 35), (255, 255, 255)
_FAKE_FILL, _FAKE_EDGE = (0, 214, 120), (10, 60, 40)
_ARROW = (40, 40, 48)
_FRAME = (60, 60, 70)


def _colormap(t: np.ndarray) -> np.ndarray:
    """t in [-1, 1] -> RGB float (…, 3) by piecewise-linear interpolation between the stops."""
    t = np.clip(np.nan_to_num(t, nan=0.0), -1.0, 1.0)
    out = np.empty(t.shape + (3,), dtype=np.float32)
    for c in range(3):
        out[..., c] = np.interp(t, _CMAP_STOPS, _CMAP_COLS[:, c])
    return out


def _disc_offsets(r: float) -> tuple[np.ndarray, np.ndarray]:
    k = int(math.ceil(r))
    dy, dx = np.mgrid[-k:k + 1, -k:k + 1]
    keep = dx**2 + dy**2 <= r * r + 0.25
    return dy[keep], dx[keep]


def _stamp(img: np.ndarray, px: np.ndarray, py: np.ndarray, r: float, colour: tuple[int, int, int]) -> None:
    """Paint filled discs of radius ``r`` (pixels) at (px, py) into img (H, W, 3) in place."""
    if len(px) == 0:
        return
    h, w = img.shape[:2]
    dy, dx = _disc_offsets(r)
    ys = (np.rint(py).astype(np.int64)[:, None] + dy[None, :]).ravel()
    xs = (np.rint(px).astype(np.int64)[:, None] + dx[None, :]).ravel()
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    img[ys[ok], xs[ok]] = colour


_FONT_CACHE: dict[int, Any] = {}


def _font(px: int) -> Any:
    if px not in _FONT_CACHE:
        try:
            _FONT_CACHE[px] = ImageFont.load_default(size=px)
        except TypeError:  # Pillow without FreeType sizes
            _FONT_CACHE[px] = ImageFont.load_default()
    return _FONT_CACHE[px]


# ------------------------------------------------------------------------------------------ trainer

class LiveGAN:
    """One learner's live GAN: call :meth:`step` from a timer and :meth:`render` for the picture.

    Thread-safe: step / render / reset / losses / modes_covered share one lock, so a timer tick and
    a button may call the same object concurrently. Picklable and deep-copyable (``gr.State``).

    Speed: with one intra-op thread, ~650 BCE steps/s and ~240 WGAN-GP steps/s (3 critic updates
    each), render(360) ~13 ms. With several intra-op threads on a busy host these tiny matmuls spin
    on OpenMP barriers and run up to ~100x slower, so serve with ``PLAYGROUND_TORCH_THREADS=1``.
    """

    def __init__(self, cfg: LiveConfig | None = None) -> None:
        self._lock = threading.RLock()
        self.reset(cfg if cfg is not None else LiveConfig())

    # ---------------------------------------------------------------------------------- state
    def reset(self, cfg: LiveConfig | None = None) -> None:
        """Fresh networks and optimisers from the seed (optionally with a new config)."""
        new = (cfg if cfg is not None else self.cfg).validate()
        with self._lock:
            self.cfg = c = new
            self._gen = make_generator(c.seed)                     # weights, then every training draw
            self._points = torch.tensor(c.points, dtype=torch.float32) if c.dataset == "custom" else None
            h = [c.hidden] * c.layers
            self.G = _mlp([c.noise_dim, *h, 2], self._gen)
            self.D = _mlp([2, *h, 1], self._gen)
            self._g_params = list(self.G.parameters())
            self._d_params = list(self.D.parameters())
            self.opt_g = _adam(self._g_params, c.lr_g, c.betas)
            self.opt_d = _adam(self._d_params, c.lr_d, c.betas)
            show = make_generator(c.seed + 7919)                   # the picture's own fixed samples
            self._real_show = self._sample_real(N_SHOW_REAL, show).numpy()
            self._z_show = torch.randn(N_SHOW_FAKE, c.noise_dim, generator=show)
            self._z_eval = torch.randn(N_EVAL, c.noise_dim, generator=make_generator(c.seed + 104729))
            lin = -VIEW + (torch.arange(HEAT_RES, dtype=torch.float32) + 0.5) * (2 * VIEW / HEAT_RES)
            yy, xx = torch.meshgrid(-lin, lin, indexing="ij")      # row 0 is the top (y = +3)
            self._heat_grid = torch.stack([xx.ravel(), yy.ravel()], 1)
            self.step_count = 0
            self.compute_seconds = 0.0
            self.done = False
            self.reason = ""
            self._diverged: str | None = None
            self._history: list[dict[str, Any]] = []
            self._acc: list[tuple[float, float, float]] = []
            self._last: dict[str, Any] = {"d_loss": None, "g_loss": None, "wasserstein": None}
            self._frame: tuple[int, np.ndarray] | None = None      # (step, generated points) of the last frame
            self._prev_frame: np.ndarray | None = None
            self._good_heat: np.ndarray | None = None

    def _sample_real(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_data(self.cfg.dataset, n, generator, self._points)

    # -------------------------------------------------------------------------------- training
    def _train_one(self) -> tuple[float, float, float]:
        """d_steps updates of D, then one of G; returns (d_loss, g_loss, wasserstein estimate)."""
        c, gen, bs = self.cfg, self._gen, self.cfg.batch_size
        wgan = c.loss == "wgan-gp"
        d_val = w_val = float("nan")
        for _ in range(c.d_steps):
            real = self._sample_real(bs, gen)
            z = torch.randn(bs, c.noise_dim, generator=gen)
            with torch.no_grad():
                fake = self.G(z)
            out = self.D(torch.cat([real, fake]))                  # one forward for both halves
            d_real, d_fake = out[:bs], out[bs:]
            if wgan:
                crit, _ = wgan_losses(d_real, d_fake)              # E f(x~) - E f(x)
                loss = crit + GP_LAMBDA * gradient_penalty(self.D, real, fake, gen)
                w_val = -crit.item()                               # E f(x) - E f(x~) ~ W1
            else:
                loss, _ = bce_losses(d_real, d_fake)
            d_val = loss.item()
            if not math.isfinite(d_val):
                return d_val, float("nan"), w_val
            grads = torch.autograd.grad(loss, self._d_params)
            for p, g in zip(self._d_params, grads):
                p.grad = g
            self.opt_d.step()
        z = torch.randn(bs, c.noise_dim, generator=gen)
        d_fake = self.D(self.G(z))
        if wgan:
            g_loss = -d_fake.mean()                                # wgan_losses(...)[1]
        else:                                                      # bce_losses(...)[1]: -E log D(G(z))
            g_loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        g_val = g_loss.item()
        if not math.isfinite(g_val):
            return d_val, g_val, w_val
        grads = torch.autograd.grad(g_loss, self._g_params)        # only G's gradients are computed
        for p, g in zip(self._g_params, grads):
            p.grad = g
        self.opt_g.step()
        return d_val, g_val, w_val

    def _flush_history(self) -> None:
        if not self._acc:
            return
        a = np.array(self._acc, dtype=np.float64)
        self._history.append({
            "step": self.step_count,
            "d_loss": float(a[:, 0].mean()),
            "g_loss": float(a[:, 1].mean()),
            "wasserstein": float(a[:, 2].mean()) if self.cfg.loss == "wgan-gp" else None,
        })
        self._acc = []

    def _budget_reason(self) -> str:
        if self.step_count >= self.cfg.max_steps:
            return f"step budget reached ({self.cfg.max_steps} steps)"
        if self.compute_seconds >= self.cfg.max_seconds:
            return f"time budget reached ({self.cfg.max_seconds:g} s of training)"
        return ""

    def step(self, n: int = 1, time_limit: float | None = None) -> dict[str, Any]:
        """Run up to ``n`` training steps (each: d_steps D updates + 1 G update), or fewer when
        this call has used ``time_limit`` seconds (a timer tick can ask for "what fits in 150 ms").

        Returns ``{"step", "d_loss", "g_loss", "wasserstein", "steps_per_second", "done", "reason",
        "seconds"}``: losses are means over the steps of this call (the last known values when no
        step ran); ``d_loss`` is what D minimises (for wgan-gp including lambda * GP);
        ``wasserstein`` is E D(real) - E D(fake) for wgan-gp (None for bce);
        ``steps_per_second`` is this call's rate, ``seconds`` the total training compute time.
        Once ``max_steps`` or ``max_seconds`` is reached, calls do nothing and report
        ``done=True``. A NaN/inf loss stops training and raises :class:`UserInputError`; the
        object can still :meth:`render` (its last good frame).
        """
        n = check_int(n, "number of steps", 0, MAX_STEPS_PER_CALL)
        limit = math.inf if time_limit is None else check_float(time_limit, "time limit", 0.0, 600.0)
        with self._lock:
            if self._diverged:
                raise UserInputError(self._diverged)
            ran, t_call, sums = 0, 0.0, [0.0, 0.0, 0.0]
            while ran < n and t_call < limit:
                reason = self._budget_reason()
                if reason:
                    break
                t0 = time.perf_counter()
                d_val, g_val, w_val = self._train_one()
                dt = time.perf_counter() - t0
                t_call += dt
                self.compute_seconds += dt
                if not (math.isfinite(d_val) and math.isfinite(g_val)):
                    self._flush_history()
                    self.done, self.reason = True, "diverged"
                    self._diverged = (f"Training diverged (loss became NaN) at step {self.step_count + 1}; "
                                      "lower the learning rates and reset.")
                    raise UserInputError(self._diverged)
                self.step_count += 1
                ran += 1
                sums[0] += d_val
                sums[1] += g_val
                sums[2] += w_val if math.isfinite(w_val) else 0.0
                self._acc.append((d_val, g_val, w_val))
                if len(self._acc) >= LOG_EVERY:
                    self._flush_history()
            reason = self._budget_reason()
            if reason:
                self._flush_history()
                self.done, self.reason = True, reason
            if ran:
                self._last = {"d_loss": sums[0] / ran, "g_loss": sums[1] / ran,
                              "wasserstein": sums[2] / ran if self.cfg.loss == "wgan-gp" else None}
            rate = ran / t_call if t_call > 0 else (self.step_count / self.compute_seconds
                                                    if self.compute_seconds > 0 else 0.0)
            return {"step": self.step_count, **self._last, "steps_per_second": rate,
                    "done": self.done, "reason": self.reason, "seconds": self.compute_seconds}

    def losses(self, max_points: int | None = None) -> list[dict[str, Any]]:
        """History rows ``{"step", "d_loss", "g_loss", "wasserstein"}``, one per 10 steps (their
        mean); with ``max_points``, evenly thinned to at most that many rows (the last one kept)."""
        with self._lock:
            rows = list(self._history)
        if max_points is not None:
            m = check_int(max_points, "max_points", 2, 100_000)
            if len(rows) > m:
                idx = np.unique(np.linspace(0, len(rows) - 1, m).round().astype(int))
                rows = [rows[i] for i in idx]
        return [dict(r) for r in rows]

    def modes_covered(self, threshold: float | None = None) -> tuple[int, int]:
        """(covered, total) mixture centres for ring / grid; (0, 0) for other datasets.

        A centre is covered when at least ``threshold`` of 2,000 generated samples (fixed noise) lie
        within 3 std of it (std of the data's Gaussians). Default: a quarter of the fair share 1/K
        (3.1 % for the 8-mode ring, 1 % for the 25-mode grid).
        """
        if self.cfg.dataset not in ("ring", "grid"):
            return 0, 0
        centres, std = mixture_centres(self.cfg.dataset)
        k = len(centres)
        thr = 0.25 / k if threshold is None else check_float(threshold, "threshold", 0.0, 1.0)
        with self._lock, torch.no_grad():
            x = self.G(self._z_eval).numpy()
        d = np.linalg.norm(x[:, None, :] - centres[None, :, :], axis=2)
        d = np.nan_to_num(d, nan=np.inf)
        near = np.argmin(d, axis=1)
        close = d[np.arange(len(x)), near] <= 3 * std
        counts = np.bincount(near[close], minlength=k)
        return int((counts >= max(thr * len(x), 1)).sum()), k

    # ------------------------------------------------------------------------------- rendering
    def render(self, size: int = 360, arrows: str = "motion") -> Image.Image:
        """An RGB ``size`` x ``size`` picture of the current state (numpy + PIL, a few ms).

        - background: D over [-3, 3]^2, evaluated on a 60 x 60 grid in one batched forward and
          upsampled; orange = "looks real" (high D), blue = "looks fake", white = undecided
          (BCE: D = 0.5; WGAN-GP: halfway between the critic's mean on real and on generated points,
          scaled per frame because a critic's values have no fixed range);
        - real points dark with a white rim, generated points bright green;
        - ``arrows="motion"``: for 120 generated points, where each fixed z's output moved since the
          previous frame (a frame is new when the step count changed); ``"gradient"``: the direction
          the generator's loss pushes each point, -dL_G/dx (uphill on D; for BCE scaled by
          sigmoid(-D), so saturated regions show short arrows), lengths relative to the longest;
          ``"none"``.
        """
        size = check_int(size, "image size", 64, 1024)
        arrows = check_choice(arrows, "arrow mode", ARROWS)
        ss = 2                                                     # supersampling for smooth dots/lines
        big = size * ss
        with self._lock:
            with torch.no_grad():
                heat = self.D(self._heat_grid).reshape(HEAT_RES, HEAT_RES).numpy().astype(np.float64)
                fake = self.G(self._z_show).numpy()
                d_real = self.D(torch.from_numpy(self._real_show)).mean().item()
                d_fake = self.D(torch.from_numpy(fake)).mean().item() if np.isfinite(fake).all() else math.nan
            grad_vec = self._generator_push(fake) if arrows == "gradient" else None
            # frames: motion arrows compare with the last frame at a different step
            if self._frame is None or self._frame[0] != self.step_count:
                self._prev_frame = None if self._frame is None else self._frame[1]
                self._frame = (self.step_count, fake)
            prev = self._prev_frame
            step, diverged, loss = self.step_count, self._diverged, self.cfg.loss
            good = np.isfinite(heat).all()
            if good:
                self._good_heat = heat
            elif self._good_heat is not None:
                heat = self._good_heat
            done_reason = self.reason if self.done else ""

        # -- heat map
        if loss == "bce":
            t = 2.0 / (1.0 + np.exp(-np.clip(heat, -60, 60))) - 1.0
        else:
            centre = 0.5 * (d_real + d_fake) if math.isfinite(d_real + d_fake) else float(np.nanmedian(heat))
            dev = np.abs(heat - centre)
            scale = float(np.nanpercentile(dev, 98)) if np.isfinite(dev).any() else 1.0
            t = (heat - centre) / max(scale, 1e-6)
        rgb = _colormap(t).astype(np.uint8)
        img = np.asarray(Image.fromarray(rgb, "RGB").resize((big, big), Image.BILINEAR)).copy()

        def to_px(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (xy[:, 0] + VIEW) / (2 * VIEW) * big, (VIEW - xy[:, 1]) / (2 * VIEW) * big

        # -- real points: dark with a light rim
        rx, ry = to_px(self._real_show)
        _stamp(img, rx, ry, 2.2 * ss, _REAL_EDGE)
        _stamp(img, rx, ry, 1.5 * ss, _REAL_FILL)

        pil = Image.fromarray(img, "RGB")
        draw = ImageDraw.Draw(pil)
        finite = np.isfinite(fake).all(axis=1) & (np.abs(fake) < 1e6).all(axis=1)
        sub = np.linspace(0, len(fake) - 1, N_ARROWS).astype(int)
        # -- arrows
        if arrows == "motion" and prev is not None:
            self._draw_arrows(draw, prev[sub], fake[sub], big, ss, min_len=1.5 * ss)
        elif arrows == "gradient" and grad_vec is not None:
            self._draw_arrows(draw, fake[sub], fake[sub] + grad_vec[sub], big, ss, min_len=1.0 * ss)
        # -- generated points: bright, with a dark rim
        fx, fy = to_px(fake[finite])
        img = np.asarray(pil).copy()
        _stamp(img, fx, fy, 2.5 * ss, _FAKE_EDGE)
        _stamp(img, fx, fy, 1.7 * ss, _FAKE_FILL)
        out = Image.fromarray(img, "RGB").reduce(ss)

        self._decorate(out, step, loss, diverged, done_reason)
        return out

    def _generator_push(self, fake: np.ndarray) -> np.ndarray | None:
        """-dL_G/dx at generated points, scaled so the longest arrow is 0.45 data units."""
        if not np.isfinite(fake).all():
            return None
        with torch.enable_grad():
            x = torch.from_numpy(fake).requires_grad_(True)
            out = self.D(x)
            if self.cfg.loss == "bce":
                lg = F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="sum")
            else:
                lg = -out.sum()
            (g,) = torch.autograd.grad(lg, x)
        v = -g.numpy()
        norm = np.linalg.norm(v, axis=1)
        m = float(norm.max()) if np.isfinite(norm).all() else 0.0
        if m <= 0:
            return None
        return v * (0.45 / m)

    @staticmethod
    def _draw_arrows(draw: ImageDraw.ImageDraw, start: np.ndarray, end: np.ndarray, big: int, ss: int,
                     min_len: float) -> None:
        s = np.stack([(start[:, 0] + VIEW) / (2 * VIEW) * big, (VIEW - start[:, 1]) / (2 * VIEW) * big], 1)
        e = np.stack([(end[:, 0] + VIEW) / (2 * VIEW) * big, (VIEW - end[:, 1]) / (2 * VIEW) * big], 1)
        ok = np.isfinite(s).all(1) & np.isfinite(e).all(1)
        for (x0, y0), (x1, y1) in zip(s[ok], e[ok]):
            dx, dy = x1 - x0, y1 - y0
            length = math.hypot(dx, dy)
            if length < min_len or length > 4 * big:
                continue
            draw.line([(x0, y0), (x1, y1)], fill=_ARROW, width=1)
            head = min(3.5 * ss, 0.45 * length)
            ux, uy = dx / length, dy / length
            for sgn in (1, -1):                                    # two barbs at +-28 degrees
                ca, sa = math.cos(0.5), sgn * math.sin(0.5)
                bx, by = ux * ca - uy * sa, ux * sa + uy * ca
                draw.line([(x1, y1), (x1 - head * bx, y1 - head * by)], fill=_ARROW, width=1)

    @staticmethod
    def _decorate(img: Image.Image, step: int, loss: str, diverged: str | None, done_reason: str) -> None:
        """Axis frame with ticks at the integers, labels, a legend and the step counter."""
        s = img.width
        draw = ImageDraw.Draw(img)
        fs = max(9, s // 34)
        font = _font(fs)
        draw.rectangle([0, 0, s - 1, s - 1], outline=_FRAME, width=1)
        tick = max(3, s // 80)
        for v in range(-2, 3):
            p = (v + VIEW) / (2 * VIEW) * s
            draw.line([(p, s - 1), (p, s - 1 - tick)], fill=_FRAME)            # x ticks (bottom)
            draw.line([(0, p), (tick, p)], fill=_FRAME)                        # y ticks (left)
            draw.text((p, s - 2 - tick), str(v), fill=_FRAME, font=font, anchor="mb")
            if v != 0:
                draw.text((tick + 2, (VIEW - v) / (2 * VIEW) * s), str(v), fill=_FRAME, font=font, anchor="lm")
        # legend (top-left) and step counter (top-right)
        r = max(2, fs // 3)
        x0, y0 = 6, 6
        lh = fs + 3
        draw.rounded_rectangle([x0 - 3, y0 - 3, x0 + 6 * fs, y0 + 2 * lh], radius=4, fill=(255, 255, 255))
        for i, (label, fill, edge) in enumerate((("real", _REAL_FILL, _REAL_EDGE),
                                                 ("generated", _FAKE_FILL, _FAKE_EDGE))):
            cy = y0 + i * lh + lh // 2 - 1
            draw.ellipse([x0 + 2, cy - r, x0 + 2 + 2 * r, cy + r], fill=fill, outline=edge if i else None)
            draw.text((x0 + 2 * r + 7, cy), label, fill=(30, 30, 30), font=font, anchor="lm")
        label = f"step {step:,}  ·  {'WGAN-GP' if loss == 'wgan-gp' else 'GAN (BCE)'}"
        draw.text((s - 7, 7), label, fill=(30, 30, 30), font=font, anchor="ra",
                  stroke_width=2, stroke_fill=(255, 255, 255))
        banner = "diverged: lower the learning rates and reset" if diverged else done_reason
        if banner:
            colour = (180, 20, 20) if diverged else (30, 30, 30)
            draw.text((s // 2, s - 4 * fs), banner, fill=colour, font=font, anchor="mm",
                      stroke_width=2, stroke_fill=(255, 255, 255))

    def __getstate__(self) -> dict[str, Any]:   # gr.State deep-copies its value; locks cannot be
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __deepcopy__(self, memo: dict[int, Any]) -> "LiveGAN":
        import copy
        new = LiveGAN.__new__(LiveGAN)
        memo[id(self)] = new
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
            new.__dict__.update(copy.deepcopy(state, memo))
        new._lock = threading.RLock()
        # the optimisers were deep-copied together with the parameters they refer to (same memo)
        return new


def points_preview(points: list[tuple[float, float]] | None, size: int = 360) -> Image.Image:
    """The empty plotting square with the user's clicked points (before a custom run starts)."""
    img = Image.new("RGB", (size, size), (250, 250, 252))
    draw = ImageDraw.Draw(img)
    for v in range(-int(VIEW), int(VIEW) + 1):
        p = (v + VIEW) / (2 * VIEW) * size
        draw.line([(p, 0), (p, size)], fill=(228, 228, 236))
        draw.line([(0, p), (size, p)], fill=(228, 228, 236))
    for x, y in points or []:
        px, py = (x + VIEW) / (2 * VIEW) * size, (VIEW - y) / (2 * VIEW) * size
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=(30, 30, 40), outline=(255, 255, 255))
    msg = "click to add points" if len(points or []) < 2 else f"{len(points)} points — press Play"
    draw.text((8, 8), msg, fill=(60, 60, 80))
    return img


def pixel_to_data(x: float, y: float, size: int) -> tuple[float, float]:
    """A click on a ``size``-pixel picture from :meth:`LiveGAN.render` -> data coordinates."""
    return (round(x / size * 2 * VIEW - VIEW, 3), round(VIEW - y / size * 2 * VIEW, 3))
