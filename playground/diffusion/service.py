"""The diffusion family's service: the digit denoisers loaded once, the forward-process explorer, and
streamed sampling — one sampler at a time, or DDPM against DDIM (or DPM-Solver++ / Euler) side by side
from the same initial noise. Plain Python in, PIL images / numbers / dicts out; no gradio here.

Every user error is a :class:`~playground.core.errors.UserInputError` raised through
:mod:`playground.core.validation`.

Equations (DDPM = Ho et al. 2020, arXiv:2006.11239; DDIM = Song et al. 2021, arXiv:2010.02502;
CFG = Ho & Salimans 2022, arXiv:2207.12598):

- forward process, DDPM eq. 4:     x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,   ε ~ N(0, I)
- signal-to-noise ratio:           SNR(t) = ᾱ_t / (1 − ᾱ_t)          (Kingma et al. 2021, eq. 2)
- predicted clean image, eq. 15:   x̂_0 = (x_t − √(1 − ᾱ_t) ε̂_θ(x_t, t, y)) / √ᾱ_t
- guidance, CFG eq. 6 (s = 1 + w): ε̃ = ε̂(x_t, ∅) + s (ε̂(x_t, y) − ε̂(x_t, ∅))

The step arithmetic lives in :mod:`playground.diffusion.sampler` (DDPM Algorithm 2, DDIM eq. 12/16,
diffusers' DPM-Solver++ and Euler); this module only drives it and turns tensors into pictures.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..core import validation as V
from ..core.checkpoint import read_json
from ..core.images import make_grid, to_pil
from ..core.service import Service
from ..core.seeding import randn
from ..data import mnist
from .sampler import SAMPLERS, Sampler, _denoise_step, initial_noise, make_sampler, normalize_labels
from .schedule import KINDS, NoiseSchedule, make_schedule
from .train import load_denoiser

# API name -> (checkpoint folder, label shown in the UI)
DIFFUSION_MODELS: dict[str, tuple[str, str]] = {
    "unet": ("diffusion_unet", "U-Net"),
    "dit": ("diffusion_dit", "DiT"),
}
SAMPLER_LABELS = {"ddpm": "DDPM (ancestral, 1000 steps)", "ddim": "DDIM", "dpm++": "DPM-Solver++ (2M)",
                  "euler": "Euler"}
RIGHT_SAMPLERS = ("ddim", "dpm++", "euler")  # what DDPM can be compared against
MAX_STEPS = 1000                  # the API accepts 1 … 1000 steps for DDIM / DPM-Solver++ / Euler
UI_STEPS = (10, 250)              # the tab's slider range for DDIM (issue 4)
MAX_GUIDANCE = 20.0
DDPM_MAX_SAMPLES = 8              # DDPM makes 1000 network passes per image: keep its runs short
FRAME_SECONDS = 0.1               # default wall time between streamed frames (gaps stay under 0.2 s: ≥ 5 frames a second throughout)
TRAJECTORY_POINTS = 8             # columns of the trajectory strip
TRAJECTORY_ROWS = 4               # images shown in the trajectory strip
STOP_CHECK = Callable[[], bool] | None


# ----------------------------------------------------------------------------------- plumbing
@dataclass(frozen=True)
class LoadedDenoiser:
    """A shipped EMA denoiser on the service's device, its noise schedule and its ``config.json``."""

    net: nn.Module
    schedule: NoiseSchedule
    config: dict[str, Any]

    @property
    def null_label(self) -> int:
        """The "no label" class of classifier-free guidance (``num_classes``, 10 for digits)."""
        return int(self.config["model"].get("num_classes", 10))

    @property
    def kind(self) -> str:
        return str(self.config["model"].get("kind", "unet"))


@dataclass(frozen=True)
class DenoiseRequest:
    """Validated sampling parameters. ``steps`` is the number of steps that will actually run (T for
    DDPM); ``label`` −1 means unconditional (the null label, so guidance has nothing to amplify)."""

    sampler: str
    steps: int
    eta: float
    seed: int
    label: int
    guidance_scale: float
    n: int
    model: str

    def labels(self, null_label: int) -> torch.Tensor:
        return normalize_labels(None if self.label < 0 else self.label, self.n, null_label)


class CountingNet(nn.Module):
    """Wraps a shared denoiser for one run and counts its forward calls and the images they evaluated
    (with guidance one call evaluates 2n images: CFG's two passes batched together)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += int(x.shape[0])
        return self.net(x, t, y)


@lru_cache(maxsize=4)
def _schedule(kind: str, timesteps: int = 1000) -> NoiseSchedule:
    return make_schedule(kind, timesteps)


def ddim_steps_offset(steps: int, train_steps: int) -> int:
    """DDIM's ``steps_offset``: 1 (Stable Diffusion's setting, our default) unless the last "leading"
    timestep (steps − 1)·⌊T/steps⌋ + 1 would fall outside 0 … T−1, which happens only for steps = T."""
    return 1 if (steps - 1) * (train_steps // steps) + 1 <= train_steps - 1 else 0


def build_sampler(name: str, schedule: NoiseSchedule, steps: int, eta: float = 0.0) -> Sampler:
    """A fresh sampler with its timesteps set (multistep solvers keep state: one per run)."""
    offset = ddim_steps_offset(steps, schedule.timesteps) if name == "ddim" else 1
    sampler = make_sampler(name, schedule, eta=eta, steps_offset=offset)
    sampler.set_timesteps(steps)
    return sampler


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] model scale -> [0, 1] image scale, clipped (x_t may exceed the data range)."""
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def grid_image(x: torch.Tensor, nrow: int | None = None) -> Image.Image:
    """A batch (n, 1, 28, 28) in [-1, 1] as one grayscale grid picture (28×28 cells, 1 px white gaps)."""
    return to_pil(make_grid(to_unit(x), nrow=nrow))


def digit_images(x: torch.Tensor) -> list[Image.Image]:
    """A batch in [-1, 1] as one 28×28 grayscale PIL image per digit."""
    return [to_pil(im) for im in to_unit(x)]


def trajectory_indices(total: int, points: int = TRAJECTORY_POINTS) -> list[int]:
    """``points`` step indices spread evenly over 0 … total−1 (both ends included)."""
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, min(points, total))})


def _stop_requested(should_stop: STOP_CHECK) -> bool:
    return bool(should_stop()) if should_stop is not None else False


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


@dataclass
class Lane:
    """One sampler's run, advanced one step at a time with :func:`sampler._denoise_step` (so DDPM and its
    rival can be interleaved). Keeps what the panels show: the network input x_t of the last step (in the
    eq. 4 scale), its x̂_0 and t; the time spent in its own steps; the trajectory columns."""

    name: str
    sampler: Sampler
    net: CountingNet
    x: torch.Tensor                      # the sampler's state (Euler keeps it σ-scaled)
    gens: list[torch.Generator]
    labels: torch.Tensor
    guidance_scale: float
    null_label: int
    bf16: bool = False
    timesteps: list[torch.Tensor] = field(default_factory=list)
    index: int = 0                       # steps done
    shown_x: torch.Tensor | None = None
    shown_x0: torch.Tensor | None = None
    shown_t: float | None = None
    seconds: float = 0.0
    traj_at: list[int] = field(default_factory=list)
    traj_xt: list[torch.Tensor] = field(default_factory=list)
    traj_x0: list[torch.Tensor] = field(default_factory=list)
    traj_t: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, sampler: Sampler, net: nn.Module, req: DenoiseRequest, null_label: int,
              device: torch.device, bf16: bool = False) -> "Lane":
        """x_T ~ N(0, I), row i from the generator seeded ``seed + i`` (which then supplies row i's
        per-step noise), exactly as :func:`sampler.sample` starts."""
        noise, gens = initial_noise(req.n, req.seed)
        timesteps = list(sampler.timesteps)
        lane = cls(name, sampler, CountingNet(net), (noise * sampler.init_noise_sigma).to(device), gens,
                   req.labels(null_label).to(device), req.guidance_scale, null_label, bf16, timesteps)
        lane.shown_x = noise
        lane.traj_at = trajectory_indices(len(timesteps))
        return lane

    @property
    def total(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.index >= self.total

    @property
    def next_t(self) -> float:
        """The timestep of the next step (−inf when finished)."""
        return float(self.timesteps[self.index]) if not self.done else -math.inf

    def step(self) -> None:
        t = self.timesteps[self.index]
        start = time.perf_counter()
        x_in, out = _denoise_step(self.net, self.sampler, self.x, t, self.labels, self.guidance_scale,
                                  self.null_label, self.gens, self.bf16)
        _sync(out.prev_sample)
        self.seconds += time.perf_counter() - start
        self.x = out.prev_sample
        self.shown_x, self.shown_x0, self.shown_t = x_in.cpu(), out.pred_original_sample.cpu(), float(t)
        if self.index in self.traj_at:
            self.traj_xt.append(self.shown_x[:TRAJECTORY_ROWS])
            self.traj_x0.append(self.shown_x0[:TRAJECTORY_ROWS])
            self.traj_t.append(float(t))
        self.index += 1

    def panel(self) -> dict[str, Any]:
        """What one panel shows now: x_t entering the last step and its x̂_0 (None before the first step)."""
        assert self.shown_x is not None
        return {"sampler": self.name, "x_t": grid_image(self.shown_x),
                "x0": grid_image(self.shown_x0) if self.shown_x0 is not None else None,
                "step": self.index, "total": self.total, "t": self.shown_t}

    def final_images(self) -> torch.Tensor:
        """x_0 when finished; the last x̂_0 (or x_T) when stopped early."""
        if self.done:
            return self.x.cpu()
        shown = self.shown_x0 if self.shown_x0 is not None else self.shown_x
        assert shown is not None
        return shown

    def trajectory(self) -> tuple[Image.Image | None, Image.Image | None]:
        """Two strips, one row per image (at most 4), one column per chosen step: x_t (then the final
        x_0 as a last column, once finished) and x̂_0. None before the first step."""
        final = [self.x.cpu()[:TRAJECTORY_ROWS]] if self.done else []
        return _strip(self.traj_xt + final), _strip(self.traj_x0)

    def result(self) -> dict[str, Any]:
        xt_strip, x0_strip = self.trajectory()
        images = self.final_images()
        return {"sampler": self.name, "images": digit_images(images), "grid": grid_image(images),
                "steps": self.index, "total": self.total, "seconds": self.seconds,
                "network_calls": self.net.calls, "network_evaluations": self.net.images,
                "trajectory": xt_strip, "trajectory_x0": x0_strip, "trajectory_t": list(self.traj_t)}


def _strip(columns: list[torch.Tensor]) -> Image.Image | None:
    """Columns of (r, 1, 28, 28) tensors -> a grid with r rows, one column per entry (None if empty)."""
    if not columns:
        return None
    stacked = torch.stack(columns, dim=1)                                   # (r, k, 1, 28, 28)
    r, k = stacked.shape[:2]
    return grid_image(stacked.reshape(r * k, *stacked.shape[2:]), nrow=k)


def _eta_seconds(elapsed: float, done: int, total: int) -> float:
    return elapsed / done * (total - done) if done else float("nan")


# -------------------------------------------------------------------------------------- service
class DiffusionService(Service):
    """The digit denoisers (U-Net, DiT): forward process, schedules, streamed sampling, DDPM vs DDIM."""

    # ---- models -------------------------------------------------------------------------------
    def available(self) -> list[str]:
        """API names of the denoisers whose ``checkpoints/<folder>/model.safetensors`` exists."""
        return self._present({m: folder for m, (folder, _) in DIFFUSION_MODELS.items()}, "model.safetensors")

    def model(self, name: str) -> LoadedDenoiser:
        """The denoiser ``name``, loaded once (registry key ``diffusion/<name>``) onto the device."""
        V.check_choice(name, "model", list(DIFFUSION_MODELS))
        folder = self.settings.checkpoints_dir / DIFFUSION_MODELS[name][0]

        def load() -> LoadedDenoiser:
            if not (folder / "model.safetensors").exists():
                raise FileNotFoundError(f"no checkpoint in {folder}: python -m playground train {folder.name}")
            net, schedule, config = load_denoiser(folder, self.device)
            return LoadedDenoiser(net, schedule, config)

        return self.registry.get(f"diffusion/{name}", load)

    def warmup(self) -> None:
        """Load every available denoiser and run two tiny DDIM steps with each (first-call kernel
        set-up) before serving."""
        for name in self.available():
            self._warm(name, "ddim")

    def warm_solvers(self) -> None:
        """Two DPM-Solver++ steps: diffusers' import (about 5 s) happens here, not in a visitor's first
        request. The app runs this in a background thread once the server listens (an import holds the
        GIL: during start-up it would slow the server's own start)."""
        if self.available():
            self._warm(self.available()[0], "dpm++")

    def _warm(self, name: str, sampler: str) -> None:
        m = self.model(name)
        lane = Lane.start(sampler, build_sampler(sampler, m.schedule, 2), m.net,
                          DenoiseRequest(sampler, 2, 0.0, 0, 1, 2.0, 1, name), m.null_label, self.device)
        while not lane.done:
            lane.step()

    # ---- forward process ------------------------------------------------------------------------
    def quality(self, name: str) -> list[dict[str, Any]]:
        """The "steps vs quality" rows measured by ``python -m playground evaluate`` (empty if not yet)."""
        V.check_choice(name, "model", list(DIFFUSION_MODELS))
        metrics = read_json(self.settings.checkpoints_dir / DIFFUSION_MODELS[name][0] / "metrics.json", {})
        return list(metrics.get("steps_vs_quality", []))

    def forward_process(self, digit: Any = 0, t: Any = 500, seed: Any = 0) -> dict[str, Any]:
        """Test digit ``digit`` (0 … 999) noised to step ``t`` (0 … 999) with q(x_t | x_0) (DDPM eq. 4),
        for the linear (DDPM) and the cosine (iDDPM eq. 17) schedule with the *same* ε (drawn from
        ``seed``), so only the schedule differs. Returns the clean digit, ε, and per schedule x_t with
        ᾱ_t, SNR(t) = ᾱ_t/(1 − ᾱ_t) and log10 SNR(t). Images are 28×28 grayscale PIL."""
        test = mnist.digits("test")
        index = V.check_int(digit, "test digit", 0, len(test) - 1)
        step = V.check_int(t, "t", 0, MAX_STEPS - 1)
        seed = V.check_seed(seed, self.limits)
        x0 = test.x[index:index + 1] * 2 - 1                                 # [0, 1] -> [-1, 1]
        eps = randn(tuple(x0.shape), seed)
        out: dict[str, Any] = {"digit": index, "label": int(test.y[index]), "t": step,
                               "x0": to_pil(test.x[index]), "noise": digit_images(eps)[0]}
        for kind in KINDS:
            s = _schedule(kind)
            ab = float(s.alpha_bars[step])
            snr = float(s.snr[step])
            out[kind] = {"x_t": digit_images(s.q_sample(x0, step, eps))[0], "alpha_bar": ab,
                         "sqrt_alpha_bar": math.sqrt(ab), "snr": snr, "log10_snr": math.log10(max(snr, 1e-30))}
        return out

    def schedule_curves(self, every: Any = 5) -> list[dict[str, Any]]:
        """Rows {t, schedule, alpha_bar, log10_snr} for both schedules, every ``every``-th t (and
        t = T−1), for the ᾱ_t and SNR plots."""
        every = V.check_int(every, "every", 1, 100)
        rows = []
        for kind in KINDS:
            s = _schedule(kind)
            ts = list(range(0, s.timesteps, every))
            if ts[-1] != s.timesteps - 1:
                ts.append(s.timesteps - 1)
            for t in ts:
                rows.append({"t": t, "schedule": kind, "alpha_bar": float(s.alpha_bars[t]),
                             "log10_snr": math.log10(max(float(s.snr[t]), 1e-30))})
        return rows

    # ---- validation -----------------------------------------------------------------------------
    def validate(self, sampler: Any = "ddim", steps: Any = 50, eta: Any = 0.0, seed: Any = 0, label: Any = -1,
                 guidance_scale: Any = 3.0, n: Any = 4, model: Any = "unet") -> DenoiseRequest:
        """Check the sampling parameters; raise :class:`UserInputError` with a message saying what to do.

        - ``sampler`` in ddpm, ddim, dpm++, euler.
        - ``steps`` must be a whole number 1 … 1000 for every sampler (0, negative or larger values are
          refused). DDPM ignores it and always runs all T = 1000 steps of its Markov chain; DDIM,
          DPM-Solver++ and Euler run ``steps`` steps (the tab's slider offers 10 … 250).
        - ``eta`` (η of DDIM eq. 16) within [0, 1]; only DDIM uses it.
        - ``guidance_scale`` finite, 0 … 20 (1 = the conditional prediction, 0 = unconditional).
        - ``label`` −1 (none: unconditional sampling) or a digit 0 … 9; None or "" mean −1.
        - ``n`` 1 … ``settings.limits.max_samples`` images, at most 8 for DDPM (1000 steps each).
        - ``seed`` 0 … ``limits.max_seed``; ``model`` an available denoiser (``unet``, ``dit``).
        """
        sampler = V.check_choice(sampler, "sampler", list(SAMPLERS))
        steps = V.check_int(steps, "steps", 1, MAX_STEPS)
        eta = V.check_float(eta, "eta (η)", 0.0, 1.0)
        guidance = V.check_float(guidance_scale, "guidance scale", 0.0, MAX_GUIDANCE)
        label = V.check_int(-1 if label is None or label == "" else label, "label", -1, 9)
        seed = V.check_seed(seed, self.limits)
        n = self._check_n(n, sampler)
        model = self._check_model(model)
        if sampler == "ddpm":
            steps = self.model(model).schedule.timesteps
        return DenoiseRequest(sampler, steps, eta, seed, label, guidance, n, model)

    def _check_n(self, n: Any, sampler: str) -> int:
        if sampler == "ddpm":
            limit = min(DDPM_MAX_SAMPLES, self.limits.max_samples)
            value = V.check_int(n, "number of images", 1, 10**9)
            if value > limit:
                raise V.UserInputError(
                    f"DDPM runs all 1000 steps (one network pass per step and image): at most {limit} images "
                    f"per run, got {value}. Ask for fewer, or use DDIM for up to {self.limits.max_samples}.")
            return value
        return V.check_int(n, "number of images", 1, self.limits.max_samples)

    def _check_model(self, model: Any) -> str:
        name = V.check_choice(model, "model", list(DIFFUSION_MODELS))
        available = self.available()
        if name not in available:
            folder, label = DIFFUSION_MODELS[name]
            others = ", ".join(available) if available else "none yet"
            raise V.UserInputError(f"The {label} denoiser is not trained yet (no checkpoints/{folder}); "
                                   f"available: {others}.")
        return name

    # ---- sampling -------------------------------------------------------------------------------
    def denoise(self, sampler: Any = "ddim", steps: Any = 50, eta: Any = 0.0, seed: Any = 0, label: Any = -1,
                guidance_scale: Any = 3.0, n: Any = 4, model: Any = "unet", should_stop: STOP_CHECK = None,
                frame_seconds: float = FRAME_SECONDS, bf16: bool = False) -> Iterator[dict[str, Any]]:
        """Sample ``n`` digits with one sampler, streamed. Arguments as in :meth:`validate` (which runs
        before the first item, so bad input raises at the first ``next()``); DDPM ignores ``steps`` and
        runs 1000.

        Yields ``{"kind": "frame", "step", "total", "t", "x_t", "x0", "elapsed", "eta_s"}`` after the
        first step, the last step, and otherwise at most once every ``frame_seconds`` of wall time;
        ``step`` counts the steps done (1 … total), ``x_t`` is the grid of the network's input at
        timestep ``t`` and ``x0`` the grid of x̂_0 predicted from it (eq. 15). Ends with
        ``{"kind": "done", "images", "grid", "seconds", "trajectory", "trajectory_x0", "trajectory_t",
        "steps", "network_calls", "network_evaluations", ...}``, or, when ``should_stop()`` returns True
        (checked before every step), with ``{"kind": "stopped", "step", "total", "images", ...}`` (the last
        x̂_0). ``bf16`` runs the network under bfloat16 autocast."""
        req = self.validate(sampler, steps, eta, seed, label, guidance_scale, n, model)
        m = self.model(req.model)
        lane = Lane.start(req.sampler, build_sampler(req.sampler, m.schedule, req.steps, req.eta), m.net, req,
                          m.null_label, self.device, bf16)
        start = last_frame = time.perf_counter()
        while not lane.done:
            if _stop_requested(should_stop):
                yield {"kind": "stopped", **self._summary(lane, start), "step": lane.index}
                return
            lane.step()
            now = time.perf_counter()
            if lane.index in (1, lane.total) or now - last_frame >= frame_seconds:
                last_frame = now
                elapsed = now - start
                panel = lane.panel()
                yield {"kind": "frame", **{k: panel[k] for k in ("step", "total", "t", "x_t", "x0")},
                       "elapsed": elapsed, "eta_s": _eta_seconds(elapsed, lane.index, lane.total)}
        yield {"kind": "done", **self._summary(lane, start)}

    def _summary(self, lane: Lane, start: float) -> dict[str, Any]:
        out = lane.result()
        out["sampler_seconds"] = out.pop("seconds")
        out["seconds"] = time.perf_counter() - start
        return out

    def compare(self, steps: Any = 50, eta: Any = 0.0, seed: Any = 0, label: Any = -1, guidance_scale: Any = 3.0,
                n: Any = 4, model: Any = "unet", right: Any = "ddim", should_stop: STOP_CHECK = None,
                frame_seconds: float = FRAME_SECONDS, bf16: bool = False) -> Iterator[dict[str, Any]]:
        """DDPM (all 1000 steps) against ``right`` (ddim, dpm++ or euler with ``steps`` steps and, for
        DDIM, ``eta``), from the same initial noise x_T (same ``seed``), streamed.

        The two run in lockstep along the timestep axis: DDPM takes every step t = 999 … 0, and the right
        sampler takes its step at τ_j when DDPM reaches t ≤ τ_j, so both panels always show about the same
        noise level. Each lane's wall time is measured around its own steps only.

        Yields ``{"kind": "frame", "ddpm": panel, "right": panel, "elapsed", "eta_s"}`` (a panel is
        ``{"sampler", "x_t", "x0", "step", "total", "t"}``; the right panel's ``x0`` and ``t`` are None
        until its first step) after the first and last DDPM steps and at most every ``frame_seconds``
        otherwise; then ``{"kind": "done", "ddpm": result, "right": result, "seconds",
        "speedup"}`` where a result has ``images``, ``grid``, ``seconds`` (its own steps), ``steps``,
        ``network_calls``, ``network_evaluations`` and the trajectory strips; or ``{"kind": "stopped", ...}``
        with both partial results when ``should_stop()`` returns True."""
        right = V.check_choice(right, "sampler to compare with DDPM", list(RIGHT_SAMPLERS))
        req = self.validate("ddpm", steps, eta, seed, label, guidance_scale, n, model)
        right_steps = V.check_int(steps, "steps", 1, MAX_STEPS)
        m = self.model(req.model)
        left = Lane.start("ddpm", build_sampler("ddpm", m.schedule, req.steps), m.net, req, m.null_label,
                          self.device, bf16)
        other = Lane.start(right, build_sampler(right, m.schedule, right_steps, req.eta), m.net, req,
                           m.null_label, self.device, bf16)
        start = last_frame = time.perf_counter()
        while not left.done:
            if _stop_requested(should_stop):
                yield {"kind": "stopped", "ddpm": left.result(), "right": other.result(),
                       "seconds": time.perf_counter() - start}
                return
            t_now = left.next_t
            left.step()
            while not other.done and other.next_t >= t_now:
                other.step()
            while left.done and not other.done:                              # defensive: finish the rival
                other.step()
            now = time.perf_counter()
            if left.index in (1, left.total) or now - last_frame >= frame_seconds:
                last_frame = now
                elapsed = now - start
                yield {"kind": "frame", "ddpm": left.panel(), "right": other.panel(), "elapsed": elapsed,
                       "eta_s": _eta_seconds(elapsed, left.index, left.total)}
        a, b = left.result(), other.result()
        yield {"kind": "done", "ddpm": a, "right": b, "seconds": time.perf_counter() - start,
               "speedup": a["seconds"] / b["seconds"] if b["seconds"] > 0 else float("nan")}
