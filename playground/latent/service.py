"""Text to image and image to image on a Stable Diffusion pipeline: our tiny one (``checkpoints/tiny_sd``,
64×64 scenes) or, on a GPU host, the Hub model named by ``PLAYGROUND_TXT2IMG_MODEL``. Plain Python in,
PIL images / numbers / dicts out; no gradio here. Every user error is a
:class:`~playground.core.errors.UserInputError`.

Equations (LDM = Rombach et al. 2022, arXiv:2112.10752; CFG = Ho & Salimans 2022, arXiv:2207.12598):

- latent diffusion, LDM eq. 2:   L = E_{z=E(x), y, ε~N(0,I), t} ‖ε − ε_θ(z_t, t, τ_θ(y))‖²,
                                 z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε
- cross-attention, LDM eq. 1:    Attention(Q, K, V) = softmax(Q Kᵀ / √d) V,
                                 Q = W_Q φ(z_t) (from the latents), K = W_K τ_θ(y), V = W_V τ_θ(y) (from the text)
- guidance (diffusers' form):    ε̃ = ε_θ(z_t, ∅) + s (ε_θ(z_t, y) − ε_θ(z_t, ∅));  s = 1 is the conditional
                                 model alone (diffusers then skips the unconditional pass), "∅" is the
                                 negative prompt (empty by default)
- predicted clean latent:        ẑ_0 = (z_t − √(1 − ᾱ_t) ε̃) / √ᾱ_t     (DDPM eq. 15 in latent space)
- img2img's starting point:      z_{t_s} = √ᾱ_{t_s} E(x) + √(1 − ᾱ_{t_s}) ε,  t_s ≈ strength · T
                                 (SDEdit, Meng et al. 2022; diffusers runs the last ⌊strength·steps⌋ steps)

Concurrency: the networks are loaded once (registry) and shared; every request builds its own light
pipeline object around them (< 1 ms) with a *fresh scheduler* — schedulers and pipelines hold per-run
state (timesteps, multistep history, ``_guidance_scale``, ``_interrupt``), so two requests never share one.
Randomness comes from CPU generators seeded ``seed + i`` for image i (diffusers' list of generators), so
the same seed gives the same image whatever the number of images.

Streaming: the pipeline runs in a worker thread; ``callback_on_step_end`` feeds a queue that the
generator :meth:`Txt2ImgService.txt2img` reads. The x̂_0 preview is the scheduler's own prediction of the
clean latent at that step (``pred_original_sample`` for DDIM / Euler, the data prediction that
DPM-Solver++ and UniPC store), decoded by the VAE: one VAE decode per preview. Measured on a 2-core CPU
(busy with another job) with a random pipeline of tiny_sd's size, 25 DPM-Solver++ steps with CFG, one
image: 0.64 s without previews, 0.94 s with a preview after every step (≈ 10 ms per 64×64 decode), 0.71 s
with the tab's one preview per 0.1 s. On a 512×512 Hub model a decode is a large fraction of a step, so
previews are throttled in time (``preview_seconds``) and turned off when the parts are offloaded to the CPU.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core import validation as V
from ..core.errors import UserInputError
from ..core.images import PARAMS_KEY, make_grid, read_params, to_pil, with_params
from ..core.service import Service
from ..diffusion.sampler import _DIFFUSERS_IMPORT   # one lock: diffusers' lazy import is not thread-safe
from .hub import family, fetch, load_pipeline, model_dtype, vae_needs_upcast

log = logging.getLogger("playground")

BUILTIN = "tiny_sd"                  # checkpoints/<BUILTIN>: our own pipeline folder
MAX_STEPS = 100
MAX_GUIDANCE = 30.0
MAX_IMAGES = 8
MAX_PROMPT_CHARS = 2000              # far beyond 77 tokens; only keeps the tokenizer's work bounded
MAX_SCALES = 8                       # guidance scales in one sweep
CFG_SCALES = (1.0, 2.0, 4.0, 7.5, 12.0)
PREVIEW_SECONDS_BUILTIN = 0.0        # the tiny VAE decodes in milliseconds: a preview after every step
PREVIEW_SECONDS_HUB = 0.5            # a 512×512 decode costs a real fraction of a step
STEP_VIEW_SCHEDULER = "DDIM"
# display name -> (diffusers class, overrides of the pipeline's scheduler config)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DDIM": ("DDIMScheduler", {"steps_offset": 1, "clip_sample": False}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
DEFAULT_SCHEDULER = "DPM++ 2M"
# the fields a PNG we wrote carries, and what read_png_params gives back
RESTORABLE = ("prompt", "negative_prompt", "steps", "guidance_scale", "seed", "scheduler", "strength")
StopCheck = Callable[[], bool] | None


# ------------------------------------------------------------------------------------ plumbing
@dataclass
class LoadedSD:
    """The shared parts of one Stable Diffusion pipeline, resident on the device.

    ``pipe`` is never called directly: :meth:`fresh` wraps its parts in a new pipeline object with a
    new scheduler for every request."""

    pipe: Any                         # the loaded text-to-image pipeline
    img2img_cls: type                 # its image-to-image counterpart (same parts)
    model: str                        # "tiny_sd" or the Hub id, as written into PNGs
    builtin: bool
    offload: bool = False             # parts move CPU <-> GPU per call: runs are serialised
    # Runs of this model are serialised (re-entrant: our own decodes inside a run take it again) when the parts
    # move (offload) or when the shared VAE changes dtype mid-run: an fp16 VAE with ``force_upcast`` (SDXL's
    # own) is cast to float32 for every encode / decode by the pipelines, and back.
    run_lock: threading.RLock | None = None
    scheduler_classes: dict[str, type] = field(default_factory=dict)
    # A fast tokenizer re-configures its Rust backend (padding, truncation) on every call, so two threads
    # tokenizing at once can get each other's settings (seen: concurrent identical requests gave different
    # pictures). Every use of the tokenizers — the pipeline's encode_prompt, our prompt checks — holds this.
    text_lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        if self.run_lock is None and (self.offload or vae_needs_upcast(self.pipe.vae)):
            self.run_lock = threading.RLock()

    @property
    def family(self) -> str:
        """"sdxl" (added conditions, two text encoders) or "sd" (SD 1.x / 2.x and our tiny_sd)."""
        return family(self.pipe.unet.config)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """:func:`decode_latents` with this model's VAE, under its run lock when it has one."""
        if self.run_lock is None:
            return decode_latents(self.pipe, latents)
        with self.run_lock:
            return decode_latents(self.pipe, latents)

    def scheduler(self, name: str) -> Any:
        cls_name, overrides = SCHEDULERS[name]
        return self.scheduler_classes[cls_name].from_config(self.pipe.scheduler.config, **overrides)

    def fresh(self, name: str, img2img: bool = False, cls: type | None = None, **replace: Any) -> Any:
        """A new pipeline object around the shared parts, with a fresh scheduler ``name``: the text-to-image
        class, its image-to-image counterpart (``img2img``), or any other pipeline class ``cls`` built from
        the same parts (e.g. ``StableDiffusionInpaintPipeline``), with parts overridden by ``replace``
        (e.g. ``unet=`` a 9-channel U-Net, ``controlnet=``)."""
        cls = cls or (self.img2img_cls if img2img else type(self.pipe))
        params = inspect.signature(cls.__init__).parameters
        parts = {k: v for k, v in self.pipe.components.items() if k in params}
        # registered settings too (SDXL: force_zeros_for_empty_prompt, requires_aesthetics_score)
        parts.update({k: v for k, v in self.pipe.config.items() if k in params and k not in parts
                      and not k.startswith("_") and not isinstance(v, (list, tuple))})
        parts.update(replace)
        parts["scheduler"] = self.scheduler(name)
        if "requires_safety_checker" in params:
            parts["requires_safety_checker"] = parts.get("safety_checker") is not None
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        encode = pipe.encode_prompt

        @functools.wraps(encode)
        def encode_prompt(*args: Any, **kwargs: Any) -> Any:
            with self.text_lock:
                return encode(*args, **kwargs)

        pipe.encode_prompt = encode_prompt          # on this request's pipeline object only
        return pipe

    @property
    def image_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)


class StepRecorder:
    """Wraps one request's scheduler ``step`` (the scheduler belongs to that request alone) and keeps,
    for the last step: the U-Net's input z_t (in the DDPM scale, √ᾱ z_0 + √(1−ᾱ) ε), the timestep, and
    the scheduler's predicted clean latent ẑ_0 — ``pred_original_sample`` (DDIM, Euler, Euler a) or the
    data prediction that DPM-Solver++ / UniPC store in ``model_outputs[-1]``."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self._step = scheduler.step
        # functools.wraps keeps the original signature visible: the pipeline passes ``generator`` and
        # ``eta`` only to a step() whose signature lists them (ancestral samplers need the generator).
        @functools.wraps(self._step)
        def step(*args: Any, **kwargs: Any) -> Any:
            return self.step(*args, **kwargs)

        scheduler.step = step
        self.steps = 0
        self.t: float | None = None
        self.x_t: torch.Tensor | None = None
        self.x0: torch.Tensor | None = None
        self.first_x_t: torch.Tensor | None = None
        self.first_t: float | None = None

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any,
             return_dict: bool = True, **kwargs: Any) -> Any:
        x_t = self.scheduler.scale_model_input(sample, timestep)        # what the U-Net saw
        out = self._step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None and getattr(self.scheduler.config, "algorithm_type", "") in ("dpmsolver++", "sde-dpmsolver++"):
            x0 = self.scheduler.model_outputs[-1]
        if x0 is None and getattr(self.scheduler.config, "predict_x0", False):      # UniPC
            x0 = self.scheduler.model_outputs[-1]
        if x0 is None:                                   # any other scheduler: ẑ_0 from ᾱ_t directly
            ab = self.scheduler.alphas_cumprod[int(timestep)].to(x_t.device, x_t.dtype)
            x0 = predicted_x0(x_t, as_noise(x_t, model_output, ab, self.scheduler.config.prediction_type), ab)
        self.steps += 1
        self.t, self.x_t, self.x0 = float(timestep), x_t, x0
        if self.first_x_t is None:
            self.first_x_t, self.first_t = x_t, float(timestep)
        return out if return_dict else (out.prev_sample,)


def predicted_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """ẑ_0 = (z_t − √(1 − ᾱ_t) ε) / √ᾱ_t (DDPM eq. 15)."""
    ab = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def as_noise(x_t: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor | float,
             prediction_type: str) -> torch.Tensor:
    """The U-Net's output as a noise prediction ε̂. For a v-predicting U-Net (SD 2.x, our tiny model),
    v = √ᾱ_t ε − √(1−ᾱ_t) z_0 and z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε give ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) z_t
    (Salimans & Ho 2022, §4). The map is affine with the same z_t for every output, so the CFG combination
    of the outputs maps to the same combination of noise predictions."""
    if prediction_type == "epsilon":
        return output
    if prediction_type != "v_prediction":
        raise ValueError(f"unsupported prediction type {prediction_type!r}")
    ab = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return ab.sqrt() * output + (1 - ab).sqrt() * x_t


def decode_latents(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """D(z / scaling_factor) as an (n, 3, H, W) CPU float tensor in [0, 1]; through the pipeline's
    safety checker when it has one (Hub models). A float16 VAE with ``force_upcast`` (SDXL's own) decodes
    in float32, as the pipelines do, and is cast back; callers serialise that (:meth:`LoadedSD.decode`)."""
    vae = pipe.vae
    upcast = vae_needs_upcast(vae)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        z = latents.to(vae.dtype) / vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None)
        if shift:
            z = z + shift
        image = vae.decode(z, return_dict=False)[0].clamp(-1, 1)
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    if getattr(pipe, "safety_checker", None) is not None and hasattr(pipe, "run_safety_checker"):
        image, _ = pipe.run_safety_checker(image, image.device, image.dtype)
        image = torch.as_tensor(image)
    return ((image.detach().float().cpu() + 1) / 2).clamp(0, 1)


def channel_maps(x: torch.Tensor, tile: int = 4) -> Image.Image:
    """A latent-shaped tensor (C, h, w) as a grid of C grayscale channel maps, each scaled
    symmetrically to its own largest |value| (mid-gray = 0), upscaled ``tile``× with nearest neighbour."""
    x = x.detach().float().cpu()
    r = x.abs().flatten(1).amax(dim=1).clamp_min(1e-8)[:, None, None]
    unit = (0.5 + 0.5 * x / r)[:, None]                                  # (C, 1, h, w)
    grid = make_grid(unit, nrow=2 if x.shape[0] == 4 else None, pad=1, pad_value=1.0)
    img = to_pil(grid)
    return img.resize((img.width * tile, img.height * tile), Image.NEAREST)


def _eta(elapsed: float, done: int, total: int) -> float:
    return elapsed / done * (total - done) if done else float("nan")


def to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Any PIL mode as 8-bit RGB, and a note saying what was done (None if it was RGB already).
    Transparency is flattened onto white (the scenes' default background); 16/32-bit and float
    grayscale are rescaled to 8 bits (PIL's plain ``convert`` would clip them to white)."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), \
            f"The image had transparency ({mode}): transparent parts were put on white."
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode == "F" and 0 <= lo and hi <= 1:
            pass                                             # already [0, 1]
        elif 0 <= lo and hi <= (255 if mode in ("I", "F") else -1):
            arr = arr / 255.0                                # 8-bit values in a wide container
        elif mode.startswith("I;16") or (0 <= lo and hi <= 65535):
            arr = arr / 65535.0                              # 16-bit
        else:
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)   # anything else: stretched
        grey = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB"), f"The image was {mode} (more than 8 bits per pixel): rescaled to 8-bit RGB."
    return img.convert("RGB"), f"The image was in {mode} mode: converted to RGB."


# ------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class GenRequest:
    """Validated generation parameters, and what the visitor should be told about them."""

    prompt: str                        # as given (the text encoder sees at most 75 tokens of it)
    negative_prompt: str
    steps: int
    guidance_scale: float
    seed: int
    scheduler: str
    n: int
    notices: tuple[str, ...] = ()

    def params(self, model: str, kind: str = "txt2img", **extra: Any) -> dict[str, Any]:
        return {"kind": kind, "prompt": self.prompt, "negative_prompt": self.negative_prompt, "steps": self.steps,
                "guidance_scale": self.guidance_scale, "scheduler": self.scheduler, "model": model, **extra}


# ------------------------------------------------------------------------------------- service
_LOADER = threading.local()            # set in the thread that loads Hub models in the background


class HubFallback:
    """What the services of the text-to-image family share about configured Hub models.

    - **Loading in the background.** After :meth:`defer_hub_loading` (the app calls it before it listens), a
      configured model is loaded only by :meth:`load_in_background` (the start-up warm-up thread); until it
      is ready every request that needs it gets a :class:`UserInputError` saying "Loading … (downloading n of
      m files)", and :meth:`header_note` says the same in the tab. Without the call (tests, scripts) the
      first request loads it, as before.
    - **Falling back.** A configured model that cannot be used is tried once; :attr:`model_note` then says
      why and which model serves instead, in the tab's header and in every answer of the tab."""

    def _init_hub_note(self) -> None:
        self.model_note = ""            # why a configured Hub model is not the one being served
        self._hub_failed = False        # a Hub model that failed is not retried per request
        self._note_lock = threading.Lock()
        self._deferred = False          # Hub models load only in the background thread
        self._loaded = threading.Event()       # set when the background loader has loaded this tab's models
        self.progress: dict[str, str] = {}     # Hub model id -> what its loading is doing now

    def defer_hub_loading(self) -> None:
        self._deferred = True

    def hub_models(self) -> list[tuple[str, str]]:
        """(registry key, model id) of the configured models this service loads itself (override)."""
        return []

    def loading(self) -> list[str]:
        """The configured models still loading, as "`model` (what its loading is doing)"."""
        if not self._deferred or self._hub_failed:
            return []
        return [f"`{mid}` ({self.progress.get(mid, 'waiting for its turn')})" for key, mid in self.hub_models()
                if key not in self.registry]           # type: ignore[attr-defined]

    def loading_message(self) -> str:
        return ("Loading " + ", ".join(self.loading()) + ". This tab answers as soon as it is ready; the other "
                "tabs work meanwhile.")

    def require_ready(self) -> None:
        """Raise the "Loading …" message while a configured model of this tab loads in the background; on
        ZeroGPU, until every model of the tab (the built-in ones too) is loaded. The handlers ask before they
        ask ZeroGPU for a GPU: a ZeroGPU worker is a fork of this process, so it must start with every model
        it can touch already loaded (and no load lock held). Elsewhere a built-in model's first request just
        waits for it, as it always did."""
        if self.loading():
            raise UserInputError(self.loading_message())
        if self._deferred and self.settings.zero_gpu and not self._loaded.is_set():  # type: ignore[attr-defined]
            raise UserInputError("Loading this tab's models. It answers as soon as they are ready; the other tabs "
                                 "work meanwhile.")

    def depends_on(self) -> list["HubFallback"]:
        """The services whose models this tab also uses (override): their notes are this tab's too."""
        return []

    def config_note(self) -> str:
        """Which built-in model serves this tab because the settings configure only others (override)."""
        return ""

    def header_note(self) -> str:
        """The tab header's note: what is loading, why a configured model is not served, which built-in model
        serves (also for the services it depends on); "" when the configured models serve."""
        own = (f"> ⏳ {self.loading_message()}" if self.loading() else
               f"> ⚠ {self.model_note}" if self.model_note else "")
        notes = [s.header_note() for s in self.depends_on()] + [own]
        if self.config_note():
            notes.append(f"> ⚠ {self.config_note()}")
        return "\n\n".join(dict.fromkeys(n for n in notes if n))

    def _fail_hub(self, note: str, log_line: str) -> None:
        with self._note_lock:
            if not self._hub_failed:
                self._hub_failed = True
                self.model_note = note
                log.error(log_line)

    def _warn(self, notes: list[str]) -> None:
        """Add warnings about a model that serves anyway (shown with the fall-back notes)."""
        for note in notes:
            with self._note_lock:
                self.model_note = f"{self.model_note} {note}".strip()
            log.warning(note)

    def _say(self, model_id: str) -> Callable[[str], None]:
        """A progress callback that records what ``model_id``'s loading is doing."""
        def say(text: str) -> None:
            self.progress[model_id] = text
            log.info("%s: %s", model_id, text)
        return say

    def _try_hub(self, key: str, model_id: str, loader: Callable[[], Any], what: str, env: str) -> Any | None:
        """The Hub model ``model_id`` loaded once through the registry, or None (and a note) if it fails. While
        it loads in the background, a :class:`UserInputError` says so."""
        if not model_id or self._hub_failed:
            return None
        if self._deferred and key not in self.registry and not self._in_loader():  # type: ignore[attr-defined]
            raise UserInputError(self.loading_message())
        try:
            return self.registry.get(key, loader)   # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - any failure: say so and serve the built-in model
            self._fail_hub(f"The configured {what} {model_id!r} could not be loaded ({type(exc).__name__}: "
                           f"{str(exc)[:300]}); {self._fallback_text()} serves instead.",
                           f"{env}={model_id} failed to load: {exc}")
            return None

    def _fallback_text(self) -> str:
        return f"the built-in 64 px model `{BUILTIN}`"

    @staticmethod
    def _in_loader() -> bool:
        return bool(getattr(_LOADER, "active", False))

    def load_in_background(self, load: Callable[[], Any]) -> None:
        """Run ``load`` (which asks for the service's models) as the background loader: first the configured
        models' files are fetched (a download of gigabytes must not hold the registry's one load lock, which
        every other model's first load takes), then ``load`` runs; the tab is ready when it returns."""
        _LOADER.active = True
        try:
            self._prefetch()
            load()
        except UserInputError:
            pass
        finally:
            _LOADER.active = False
            self._loaded.set()

    def _prefetch(self) -> None:
        """Download the configured models' files (:func:`.hub.fetch`), outside the registry lock."""
        dtype = model_dtype(self.settings.dtype, self.device)   # type: ignore[attr-defined]
        for key, model_id in self.hub_models():
            if key in self.registry or self._hub_failed:     # type: ignore[attr-defined]
                continue
            try:
                fetch(model_id, dtype, self._say(model_id))
                if self.settings.vae_model:                  # type: ignore[attr-defined]
                    fetch(self.settings.vae_model, dtype, self._say(model_id))   # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - the load itself says why, with the fall-back
                log.warning("prefetching %s failed: %s", model_id, exc)


class Txt2ImgService(HubFallback, Service):
    """Text to image, CFG made visible, and img2img on one Stable Diffusion pipeline."""

    uses_zero_gpu = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_hub_note()

    def hub_models(self) -> list[tuple[str, str]]:
        hub = self.settings.txt2img_model
        return [(f"txt2img/hub/{hub}", hub)] if hub else []

    def served_family(self) -> str:
        """"sdxl" or "sd": the family of the model serving now ("sd" while it still loads)."""
        try:
            return self.model().family
        except UserInputError:
            return "sd"

    def serves_builtin(self) -> bool:
        """Is the built-in tiny_sd the model served (none configured, or the configured one failed)?"""
        return not self.settings.txt2img_model or self._hub_failed

    # ---- the model ---------------------------------------------------------------------------
    @property
    def folder(self):
        return self.settings.checkpoints_dir / BUILTIN

    def builtin_present(self) -> bool:
        return (self.folder / "model_index.json").exists()

    def available(self) -> bool:
        """Is there anything to serve (a configured Hub model, or our trained checkpoint)?"""
        return bool(self.settings.txt2img_model) or self.builtin_present()

    def model(self) -> LoadedSD:
        """The pipeline, loaded once: the Hub model of ``settings.txt2img_model`` when set (falling back
        to the built-in one, with :attr:`model_note` saying why, if it cannot be loaded), else ours."""
        hub = self.settings.txt2img_model
        m = self._try_hub(f"txt2img/hub/{hub}", hub, lambda: self._load_hub(hub), "model", "PLAYGROUND_TXT2IMG_MODEL")
        if m is not None:
            return m
        if not self.builtin_present():
            raise UserInputError((f"{self.model_note} " if self.model_note else "") +
                                 "The text-to-image model is not trained yet (no checkpoints/tiny_sd): "
                                 "python -m playground train tiny_sd")
        return self.registry.get(f"txt2img/{self.folder}", self._load_builtin)

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _classes(*names: str) -> dict[str, type]:
        """The scheduler classes and ``names``, imported under the diffusers import lock (once: a request
        never takes that lock again, which a ZeroGPU worker forked while another thread held it could not)."""
        with _DIFFUSERS_IMPORT:
            import diffusers

            from . import components  # noqa: F401 - imports diffusers' pipeline modules too
            return {name: getattr(diffusers, name) for name in (*(c for c, _ in SCHEDULERS.values()), *names)}

    def _load_builtin(self) -> LoadedSD:
        from .components import load_pipeline

        classes = self._classes("StableDiffusionImg2ImgPipeline")
        pipe = load_pipeline(self.folder, self.device)
        return LoadedSD(pipe, classes["StableDiffusionImg2ImgPipeline"], BUILTIN, True, scheduler_classes=classes)

    def _load_hub(self, model_id: str) -> LoadedSD:
        """A Hub (or local) diffusers text-to-image pipeline (:func:`.hub.load_pipeline`: fp16 on CUDA with
        the fp16 weights where the repository has them, safetensors only, never remote code, the configured
        VAE; model CPU offload or attention slicing with little free GPU memory)."""
        classes = self._classes("AutoPipelineForText2Image", "AutoPipelineForImage2Image")
        pipe, offload, notes = load_pipeline(classes["AutoPipelineForText2Image"], model_id, self.device,
                                      self.settings.vae_model, self._say(model_id), self.settings.zero_gpu,
                                      self.settings.dtype)
        img2img = type(classes["AutoPipelineForImage2Image"].from_pipe(pipe))
        self._warn(notes)
        log.info("txt2img: loaded %s (%s, offload=%s)", model_id, type(pipe).__name__, offload)
        return LoadedSD(pipe, img2img, model_id, False, offload, scheduler_classes=classes)

    def warmup(self) -> None:
        """Load the model (as the background loader: see :class:`HubFallback`) and run two tiny steps
        (first-call set-up) so no visitor waits for it. On ZeroGPU the main process has no GPU: load only."""
        if not self.available():
            self._loaded.set()                        # nothing to load: the tab says "not trained yet"
            return
        try:
            self.load_in_background(self.model)
            if self.settings.zero_gpu:
                return
            for _ in self.txt2img("a red circle", "", 2, 2.0, 0, DEFAULT_SCHEDULER, 1, preview_seconds=0.0):
                pass
        except UserInputError:
            pass
        except Exception:  # noqa: BLE001 - runs in a background thread at start-up: log, never crash
            log.exception("text-to-image warm-up failed")

    def pipeline_info(self) -> dict[str, Any] | None:
        """The served pipeline's tensor shapes and sizes, for the lesson's diagram. For the built-in model
        they are read from the folder's config files and safetensors headers, without loading anything
        (the tab is built at start-up while the model still loads in the background); None while a
        configured Hub model is still loading in the background."""
        if self.settings.txt2img_model and not self._hub_failed:
            try:
                m = self.model()
            except UserInputError:
                if self.loading():
                    return None
                raise
            if not m.builtin:
                return self._info_from_pipe(m)
        if not self.builtin_present():
            raise UserInputError("The text-to-image model is not trained yet (no checkpoints/tiny_sd): "
                                 "python -m playground train tiny_sd")
        return self._info_from_folder()

    @staticmethod
    def _info(model: str, builtin: bool, pipeline: str, tokens: int, text: dict[str, Any], unet: dict[str, Any],
              vae_factor: int, params: dict[str, int]) -> dict[str, Any]:
        side = int(unet["sample_size"])
        return {"model": model, "builtin": builtin, "pipeline": pipeline, "tokens": int(tokens),
                "vocab_size": int(text["vocab_size"]), "text_dim": int(text["hidden_size"]),
                "text_layers": int(text["num_hidden_layers"]), "latent_channels": int(unet["in_channels"]),
                "latent_side": side, "vae_factor": int(vae_factor), "image_side": side * int(vae_factor),
                "unet_channels": [int(c) for c in unet["block_out_channels"]],
                "cross_attention_dim": unet["cross_attention_dim"], "params": params}

    def _info_from_pipe(self, m: LoadedSD) -> dict[str, Any]:
        p = m.pipe
        params = {k: int(sum(t.numel() for t in getattr(p, k).parameters())) for k in ("text_encoder", "unet", "vae")}
        return self._info(m.model, m.builtin, type(p).__name__, p.tokenizer.model_max_length,
                          p.text_encoder.config.to_dict(), dict(p.unet.config), p.vae_scale_factor, params)

    def _info_from_folder(self) -> dict[str, Any]:
        from safetensors import safe_open

        root = self.folder

        def config(part: str, name: str = "config.json") -> dict[str, Any]:
            return json.loads((root / part / name).read_text())

        def count(part: str) -> int:
            total = 0
            for path in sorted((root / part).glob("*.safetensors")):
                with safe_open(str(path), "pt") as f:
                    total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
            return total

        index = json.loads((root / "model_index.json").read_text())
        vae_factor = 2 ** (len(config("vae")["block_out_channels"]) - 1)
        return self._info(BUILTIN, True, index.get("_class_name", "StableDiffusionPipeline"),
                          config("tokenizer", "tokenizer_config.json")["model_max_length"], config("text_encoder"),
                          config("unet"), vae_factor, {k: count(k) for k in ("text_encoder", "unet", "vae")})

    # ---- validation ------------------------------------------------------------------------------
    def _text(self, value: Any, name: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise UserInputError(f"The {name} must be text, got {type(value).__name__}.")
        if len(value) > MAX_PROMPT_CHARS:
            raise UserInputError(f"The {name} is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS} "
                                 f"(and the model reads only its first 75 tokens anyway).")
        return value

    def _prompt_notices(self, m: LoadedSD, text: str, name: str) -> list[str]:
        from .vocab import describe_prompt

        out: list[str] = []
        with m.text_lock:
            info = describe_prompt(m.pipe.tokenizer, text)
        if info.truncated:
            out.append(f"The {name} has {info.n_tokens} tokens; the text encoder reads only the first "
                       f"{info.max_tokens}: it was cut after “{info.kept_text[-60:]}”.")
        if m.builtin and info.unknown_words:
            words = ", ".join(f"“{w}”" for w in info.unknown_words[:12])
            out.append(f"Words the model never saw (spelled out letter by letter, so they mean little to it) "
                       f"in the {name}: {words}.")
        return out

    def check_steps(self, steps: Any) -> int:
        return V.check_int(steps, "steps", 1, MAX_STEPS)

    def check_guidance(self, guidance_scale: Any, lo: float = 1.0) -> float:
        """A finite guidance scale in [lo, 30]; 1 … 30 for the pipeline, which skips the unconditional pass
        at s ≤ 1 (so s < 1 would silently mean s = 1)."""
        x = V.check_float(guidance_scale, "guidance scale", -math.inf, math.inf)
        if not lo <= x <= MAX_GUIDANCE:
            hint = (": s = 1 is the conditional model alone (the pipeline skips the unconditional pass at s ≤ 1); "
                    "for a picture without a caption, leave the prompt empty" if lo == 1.0 and 0 <= x < 1 else "")
            raise UserInputError(f"The guidance scale must be between {lo:g} and {MAX_GUIDANCE:g}, got {x:g}{hint}.")
        return x

    def check_scheduler(self, scheduler: Any) -> str:
        return V.check_choice(scheduler, "scheduler", list(SCHEDULERS))

    def validate(self, prompt: Any = "", negative_prompt: Any = "", steps: Any = 25, guidance_scale: Any = 7.5,
                 seed: Any = 0, scheduler: Any = DEFAULT_SCHEDULER, n: Any = 1) -> GenRequest:
        """Check the generation parameters, or raise :class:`UserInputError` saying what to do.

        - ``prompt`` / ``negative_prompt``: text up to 2000 characters (None = ""). An empty prompt is
          allowed: the model then draws unconditionally, and a notice says so. Past 75 tokens the text is
          cut (as in every Stable Diffusion) and a notice says where; words outside our vocabulary are
          listed (built-in model only).
        - ``steps`` 1 … 100; ``guidance_scale`` 1 … 30 (finite); ``scheduler`` one of :data:`SCHEDULERS`;
          ``n`` 1 … 8 images; ``seed`` 0 … ``limits.max_seed`` with seed + n − 1 within it too (image i
          uses seed + i)."""
        prompt = self._text(prompt, "prompt")
        negative = self._text(negative_prompt, "negative prompt")
        steps = self.check_steps(steps)
        guidance = self.check_guidance(guidance_scale)
        scheduler = self.check_scheduler(scheduler)
        n = V.check_int(n, "number of images", 1, min(MAX_IMAGES, self.limits.max_samples))
        seed = V.check_seed(seed, self.limits)
        if seed + n - 1 > self.limits.max_seed:
            raise UserInputError(f"Image i uses seed + i: with {n} images the seed can be at most "
                                 f"{self.limits.max_seed - n + 1}.")
        m = self.model()
        notices = self._notices(m, prompt, negative, guidance)
        return GenRequest(prompt, negative, steps, guidance, seed, scheduler, n, tuple(notices))

    def _notices(self, m: LoadedSD, prompt: str, negative: str, guidance: float) -> list[str]:
        notices: list[str] = [self.model_note] if self.model_note else []
        if not prompt.strip():
            notices.append("Empty prompt: the model draws unconditionally — whatever it learned to make "
                           "without a caption." + (" With an empty negative prompt too, guidance has nothing "
                                                    "to amplify." if not negative.strip() and guidance > 1 else ""))
        notices += self._prompt_notices(m, prompt, "prompt")
        if negative:
            notices += self._prompt_notices(m, negative, "negative prompt")
        return notices

    # ---- running a pipeline in a worker thread ------------------------------------------------------
    def _generators(self, seed: int, n: int) -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]

    def _stream(self, m: LoadedSD, pipe: Any, kwargs: dict[str, Any], should_stop: StopCheck,
                preview_seconds: float) -> Iterator[tuple[str, Any]]:
        """Run ``pipe(**kwargs)`` in a worker thread and yield ("step", info) after every step, then
        ("done", output, recorder) or ("stopped", recorder). The stop check runs after every step; a
        closed generator (client gone) stops the run too."""
        rec = StepRecorder(pipe.scheduler)
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        start = time.perf_counter()
        last_preview = -math.inf
        previews = not m.offload and math.isfinite(preview_seconds)   # inf: no previews at all
        decode_time = [0.0]

        def on_step(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal last_preview
            if cancel.is_set() or (should_stop is not None and should_stop()):
                cancel.set()
                p._interrupt = True
                return {}
            now = time.perf_counter()
            total = p.num_timesteps
            preview = None
            if previews and (i + 1 == total or i == 0 or now - last_preview >= preview_seconds):
                d0 = time.perf_counter()
                preview = m.decode(rec.x0)
                decode_time[0] += time.perf_counter() - d0
                last_preview = time.perf_counter()
            elapsed = time.perf_counter() - start
            events.put(("step", {"step": i + 1, "total": total, "t": float(t), "elapsed": elapsed,
                                 "eta_s": _eta(elapsed, i + 1, total), "preview": preview}))
            return {}

        def work() -> None:
            try:
                if m.run_lock is not None:
                    m.run_lock.acquire()
                try:
                    with torch.inference_mode():
                        out = pipe(**kwargs, callback_on_step_end=on_step, output_type="pil")
                finally:
                    if m.run_lock is not None:
                        m.run_lock.release()
                events.put(("stopped", None) if cancel.is_set() else ("done", out))
            except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                events.put(("error", exc))

        worker = threading.Thread(target=work, name="txt2img-run", daemon=True)
        worker.start()
        try:
            while True:
                kind, payload = events.get()
                if kind == "error":
                    raise payload
                if kind == "step":
                    yield kind, payload
                    continue
                worker.join()
                yield kind, {"output": payload, "recorder": rec, "seconds": time.perf_counter() - start,
                             "preview_decode_seconds": decode_time[0]}
                return
        finally:
            cancel.set()
            worker.join(timeout=60)

    # ---- text to image --------------------------------------------------------------------------
    def txt2img(self, prompt: Any = "", negative_prompt: Any = "", steps: Any = 25, guidance_scale: Any = 7.5,
                seed: Any = 0, scheduler: Any = DEFAULT_SCHEDULER, n: Any = 1, should_stop: StopCheck = None,
                preview_seconds: float | None = None) -> Iterator[dict[str, Any]]:
        """Generate ``n`` images, streamed. Arguments as in :meth:`validate` (which runs before the first
        item, so bad input raises at the first ``next()``).

        Yields ``{"kind": "step", "step", "total", "t", "elapsed", "eta_s", "preview", "notices"}`` after
        every step (``step`` counts steps done, 1 … total); ``preview`` is a grid of the decoded x̂_0 of
        all images (or None when throttled: at most one every ``preview_seconds``, always after the first
        and the last step; default 0 for the built-in model, 0.5 s for Hub models). Ends with
        ``{"kind": "done", "images", "seconds", "preview_decode_seconds", "notices", "model", ...}`` — PIL
        images carrying their parameters (image i with seed + i) and a request id as a PNG text chunk — or,
        when ``should_stop()`` turns True (checked after every step) or the generator is closed,
        ``{"kind": "stopped", "step", "total", "images"}`` with the last x̂_0 decoded."""
        req = self.validate(prompt, negative_prompt, steps, guidance_scale, seed, scheduler, n)
        m = self.model()
        if preview_seconds is None:
            preview_seconds = PREVIEW_SECONDS_BUILTIN if m.builtin else PREVIEW_SECONDS_HUB
        pipe = m.fresh(req.scheduler)
        kwargs = dict(prompt=req.prompt, negative_prompt=req.negative_prompt or None, num_inference_steps=req.steps,
                      guidance_scale=req.guidance_scale, num_images_per_prompt=req.n,
                      generator=self._generators(req.seed, req.n))
        request_id = uuid.uuid4().hex
        base = {"notices": list(req.notices), "model": m.model, "size": m.image_size}
        last_step = {"step": 0, "total": req.steps}
        for kind, info in self._stream(m, pipe, kwargs, should_stop, preview_seconds):
            if kind == "step":
                last_step = info
                if info["preview"] is not None:
                    info["preview"] = to_pil(make_grid(info["preview"], nrow=min(req.n, 4)))
                yield {"kind": "step", **info, **base}
            elif kind == "done":
                images = [with_params(im, req.params(m.model, seed=req.seed + i, base_seed=req.seed, index=i,
                                                     request=request_id))
                          for i, im in enumerate(info["output"].images)]
                yield {"kind": "done", "images": images, "seconds": info["seconds"], "steps": req.steps,
                       "preview_decode_seconds": info["preview_decode_seconds"], "scheduler": req.scheduler,
                       **base}
            else:
                rec = info["recorder"]
                images = []
                if rec.x0 is not None:
                    with torch.inference_mode():
                        x0 = m.decode(rec.x0)
                    images = [with_params(to_pil(x), req.params(m.model, seed=req.seed + i, base_seed=req.seed,
                                                                index=i, stopped_at=rec.steps, request=request_id))
                              for i, x in enumerate(x0)]
                yield {"kind": "stopped", "step": rec.steps, "total": last_step["total"], "images": images,
                       "seconds": info["seconds"], **base}

    def generate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`txt2img` run to the end: its last item (``done`` or ``stopped``)."""
        last: dict[str, Any] = {}
        for item in self.txt2img(*args, **kwargs):
            last = item
        return last

    # ---- classifier-free guidance, made visible -----------------------------------------------------
    def cfg_sweep(self, prompt: Any = "", negative_prompt: Any = "", steps: Any = 25, seed: Any = 0,
                  scheduler: Any = DEFAULT_SCHEDULER, scales: Sequence[Any] = CFG_SCALES) -> dict[str, Any]:
        """The same seed (same initial noise) at each guidance scale: ``{"scales", "images", "seconds",
        "notices"}``. Each image is exactly what :meth:`txt2img` gives at that scale."""
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not 1 <= len(scales) <= MAX_SCALES:
            raise UserInputError(f"Give 1 to {MAX_SCALES} guidance scales.")
        checked = [self.check_guidance(s) for s in scales]
        req = self.validate(prompt, negative_prompt, steps, checked[0], seed, scheduler, 1)
        start = time.perf_counter()
        images = []
        for s in checked:
            out = self.generate(req.prompt, req.negative_prompt, req.steps, s, req.seed, req.scheduler, 1,
                                preview_seconds=math.inf)
            images.append(out["images"][0])
        return {"scales": checked, "images": images, "seconds": time.perf_counter() - start,
                "notices": list(req.notices)}

    def _cfg_loop(self, m: LoadedSD, prompt: str, negative: str, steps: int, seed: int, guidance: float,
                  stop_at: int | None, scheduler: str = STEP_VIEW_SCHEDULER) -> dict[str, Any]:
        """The pipeline's denoising loop written out (same operations, same order): both CFG passes as one
        batch, ε̃ = ε_∅ + s (ε_y − ε_∅), the scheduler's step. Stops at step ``stop_at`` (0-based) and
        returns that step's z_t, t, ᾱ_t and the U-Net's three outputs (ε_∅, ε_y, ε̃ — or v for a v-predicting
        model; the combination is the same); with ``stop_at`` None runs to the end and returns
        the final latents."""
        pipe = m.fresh(scheduler)
        device = pipe._execution_device
        side = m.image_size
        added = None                              # SDXL's added conditions (Podell et al. 2023, §2.2)
        if m.family == "sdxl":
            cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
                prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True,
                negative_prompt=negative or None)
            # (original size, crop top-left, target size): what the pipeline passes by default
            time_ids = pipe._get_add_time_ids((side, side), (0, 0), (side, side), dtype=cond.dtype,
                                              text_encoder_projection_dim=int(pipe.text_encoder_2.config.projection_dim))
            added = {"text_embeds": torch.cat([uncond_pooled, pooled]).to(device),
                     "time_ids": torch.cat([time_ids, time_ids]).to(device)}
        else:
            cond, uncond = pipe.encode_prompt(prompt, device, 1, True, negative or None)
        embeds = torch.cat([uncond, cond])
        sched = pipe.scheduler
        sched.set_timesteps(steps, device=device)
        gens = self._generators(seed, 1)          # as in the pipeline: one list for the noise and the steps
        latents = pipe.prepare_latents(1, int(pipe.unet.config.in_channels), side, side, embeds.dtype, device, gens)
        extra = pipe.prepare_extra_step_kwargs(gens, 0.0)
        for i, t in enumerate(sched.timesteps):
            x_in = sched.scale_model_input(torch.cat([latents] * 2), t)
            eps = pipe.unet(x_in, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]
            eps_u, eps_c = eps.chunk(2)
            guided = eps_u + guidance * (eps_c - eps_u)
            if stop_at is not None and i == stop_at:
                ab = sched.alphas_cumprod[int(t)].to(device)
                return {"x_t": x_in[:1], "t": int(t), "alpha_bar": float(ab), "uncond": eps_u, "cond": eps_c,
                        "guided": guided, "pipe": pipe}
            latents = sched.step(guided, t, latents, **extra, return_dict=False)[0]
        return {"latents": latents, "pipe": pipe}

    def cfg_step_view(self, prompt: Any = "", negative_prompt: Any = "", steps: Any = 25, seed: Any = 0,
                      step_index: Any = 10, guidance_scale: Any = 7.5) -> dict[str, Any]:
        """One DDIM step of classifier-free guidance, opened up. The run follows the guided trajectory
        (scale ``guidance_scale``, 0 … 30; here s < 1 is allowed: s = 0 is the unconditional model) up to
        step ``step_index`` (0 … steps − 1), then shows its three noise predictions — ε_∅ (negative prompt),
        ε_y (prompt) and ε̃ = ε_∅ + s (ε_y − ε_∅) — and the guidance direction ε_y − ε_∅, as 4 channel maps
        each, with the ẑ_0 each of them implies, decoded. Returns images (PIL) and their norms."""
        prompt = self._text(prompt, "prompt")
        negative = self._text(negative_prompt, "negative prompt")
        steps = self.check_steps(steps)
        k = V.check_int(step_index, "step", 0, steps - 1)
        guidance = self.check_guidance(guidance_scale, lo=0.0)
        seed = V.check_seed(seed, self.limits)
        m = self.model()
        notices = self._notices(m, prompt, negative, guidance)
        start = time.perf_counter()
        with torch.inference_mode(), (m.run_lock or contextlib.nullcontext()):
            r = self._cfg_loop(m, prompt, negative, steps, seed, guidance, k)
            x_t, ab = r["x_t"], r["alpha_bar"]
            kind = r["pipe"].scheduler.config.prediction_type
            eps = {name: as_noise(x_t, r[name], ab, kind) for name in ("uncond", "cond", "guided")}
            x0 = {name: predicted_x0(x_t, e, ab) for name, e in eps.items()}
            decoded = m.decode(torch.cat([x_t, *x0.values()]))
        pics = [to_pil(x) for x in decoded]
        direction = eps["cond"] - eps["uncond"]
        return {
            "step": k, "steps": steps, "t": r["t"], "alpha_bar": ab, "guidance_scale": guidance,
            "x_t": pics[0],
            "eps": {name: channel_maps(e[0]) for name, e in eps.items()},
            "direction": channel_maps(direction[0]),
            "x0": dict(zip(eps, pics[1:])),
            "norms": {**{name: float(e.norm()) for name, e in eps.items()}, "direction": float(direction.norm())},
            "seconds": time.perf_counter() - start, "notices": notices, "model": m.model,
        }

    # ---- image to image ----------------------------------------------------------------------------
    def prepare_image(self, image: Any, size: int | None = None) -> tuple[Image.Image, list[str]]:
        """An upload as an RGB ``size``×``size`` image (the model's native size by default), and notes
        for the visitor: mode conversions, a centre crop of non-square images, resizing. Refuses missing,
        corrupt and over-limit images (``settings.limits``)."""
        img = V.check_image(image, self.limits, "image")
        if size is None:
            size = self.model().image_size
        notes: list[str] = []
        img, note = to_rgb(img)
        if note:
            notes.append(note)
        w, h = img.size
        if w != h:
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
            notes.append(f"The image was {w}×{h}: cropped to its centre {side}×{side} square.")
        if img.width != size:
            verb = "scaled down" if img.width > size else "upscaled (expect a blurry start)"
            notes.append(f"The image was {verb} from {img.width}×{img.height} to the model's {size}×{size}.")
            # An exact multiple is averaged block by block: a picture that was enlarged pixel for pixel
            # (as the editors show ours) comes back exactly.
            img = img.reduce(img.width // size) if img.width % size == 0 else img.resize((size, size), Image.LANCZOS)
        return img, notes

    def check_strength(self, strength: Any, steps: int) -> float:
        x = V.check_float(strength, "strength", 0.0, 1.0)
        if int(steps * x) < 1:
            raise UserInputError(f"With strength {x:g} and {steps} steps, ⌊strength·steps⌋ = 0 steps would run "
                                 f"(the image would come back unchanged). Raise the strength to at least "
                                 f"{1 / steps:.2g} or use more steps.")
        return x

    def img2img(self, image: Any, prompt: Any = "", strength: Any = 0.6, steps: Any = 25, guidance_scale: Any = 7.5,
                seed: Any = 0, scheduler: Any = DEFAULT_SCHEDULER, negative_prompt: Any = "") -> dict[str, Any]:
        """SDEdit: encode ``image``, noise it to t_s ≈ strength·T, denoise with the prompt for the last
        ⌊strength·steps⌋ steps. ``strength`` in (0, 1] (1 = ignore the image's content, start from pure
        noise); other arguments as in :meth:`validate`. Returns ``{"input"`` (the 64×64 RGB image used),
        ``"start"`` (the noised starting point z_{t_s}, decoded), ``"result"`` (with its PNG parameters),
        ``"t_start", "alpha_bar", "steps_run", "notices", "seconds"}``."""
        req = self.validate(prompt, negative_prompt, steps, guidance_scale, seed, scheduler, 1)
        strength = self.check_strength(strength, req.steps)
        m = self.model()
        init, notes = self.prepare_image(image, m.image_size)
        pipe = m.fresh(req.scheduler, img2img=True)
        kwargs = dict(prompt=req.prompt, negative_prompt=req.negative_prompt or None, image=init, strength=strength,
                      num_inference_steps=req.steps, guidance_scale=req.guidance_scale,
                      generator=self._generators(req.seed, 1))
        result: dict[str, Any] = {}
        for kind, info in self._stream(m, pipe, kwargs, None, math.inf):
            if kind == "done":
                result = info
        rec: StepRecorder = result["recorder"]
        with torch.inference_mode():
            start_img = to_pil(m.decode(rec.first_x_t)[0])
        t_s = int(round(rec.first_t))
        sched = pipe.scheduler
        ab = float(sched.alphas_cumprod[min(max(t_s, 0), len(sched.alphas_cumprod) - 1)])
        params = req.params(m.model, kind="img2img", strength=strength, seed=req.seed)
        return {"input": init, "start": start_img, "result": with_params(result["output"].images[0], params),
                "t_start": t_s, "alpha_bar": ab, "steps_run": rec.steps, "strength": strength,
                "notices": list(req.notices) + notes, "seconds": result["seconds"], "model": m.model}

    # ---- parameters from a PNG ------------------------------------------------------------------------
    def read_png_params(self, image: Any) -> dict[str, Any]:
        """Restore generation parameters from a PNG this tab wrote (its text chunk).

        Returns ``{"params": {field: value}, "ignored": {field: reason}, "message", "model", "kind"}``:
        every valid field of :data:`RESTORABLE`; forged or out-of-range fields are ignored with a reason (a
        partial restore). A picture with no parameters at all, or an unreadable chunk, raises
        :class:`UserInputError`."""
        img = V.check_image(image, self.limits, "image")
        raw = getattr(img, "text", {}).get(PARAMS_KEY) if hasattr(img, "text") else None
        raw = raw if raw is not None else img.info.get(PARAMS_KEY)
        if raw is None:
            raise UserInputError("This picture carries no generation parameters (only PNGs made here do; "
                                 "saving as JPEG or editing it removes them).")
        data = read_params(img)
        if data is None:
            raise UserInputError("This picture's parameters are unreadable (not the JSON this app writes): "
                                 "nothing was restored.")
        params: dict[str, Any] = {}
        ignored: dict[str, str] = {}
        checks: dict[str, Callable[[Any], Any]] = {
            "prompt": lambda v: self._text(v, "prompt"),
            "negative_prompt": lambda v: self._text(v, "negative prompt"),
            "steps": self.check_steps,
            "guidance_scale": self.check_guidance,
            "seed": lambda v: V.check_seed(v, self.limits),
            "scheduler": self.check_scheduler,
            "strength": lambda v: V.check_float(v, "strength", 0.0, 1.0),
        }
        for name in RESTORABLE:
            if name not in data:
                continue
            try:
                params[name] = checks[name](data[name])
            except UserInputError as exc:
                ignored[name] = str(exc)
        kind = data.get("kind") if isinstance(data.get("kind"), str) else None
        model = data.get("model") if isinstance(data.get("model"), str) else None
        if not params:
            raise UserInputError("This picture's parameters hold nothing this tab can use"
                                 + (f" ({', '.join(sorted(ignored))} invalid)." if ignored else
                                    " (it was made by another tab)."))
        parts = [f"Restored {', '.join(params)}."]
        if ignored:
            parts.append("Ignored (invalid): " + "; ".join(f"{k}: {v}" for k, v in ignored.items()))
        if kind not in ("txt2img", "img2img"):
            parts.append("This picture was not made by the text-to-image tab: only matching fields were used.")
        served = BUILTIN if self._hub_failed else (self.settings.txt2img_model or BUILTIN)
        if model and model != served:
            parts.append(f"It was made by {model!r}; this server runs {served!r}, so the picture may differ.")
        return {"params": params, "ignored": ignored, "message": " ".join(parts), "model": model, "kind": kind}
