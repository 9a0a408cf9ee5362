"""Canny ControlNet on our tiny Stable Diffusion (or, on a GPU host, a Hub ControlNet on the Hub base model).
Plain Python in, PIL images / numbers / dicts out; no gradio here. Every user error is a
:class:`~playground.core.errors.UserInputError`.

**Canny edges** (Canny 1986, "A Computational Approach to Edge Detection", IEEE PAMI 8(6)): smooth,
take the image gradient (3×3 Sobel; magnitude |G_x| + |G_y|), thin it by non-maximum suppression along
the gradient direction, then hysteresis with two thresholds: a pixel whose magnitude exceeds ``high`` is
an edge; one above ``low`` is an edge only when connected to a strong one. ``cv2.Canny`` does all of it.
We run it on the *colour* image, as lllyasviel's ControlNet annotator does (``cv2.Canny(rgb, low, high)``:
OpenCV then takes, per pixel, the channel with the largest gradient). On the grey image a green triangle
or an orange circle on a gray background has almost no luminance step and would give no edges at all.

**ControlNet** (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion
Models", arXiv:2302.05543). A neural block F(·; Θ) (here: the U-Net's encoder and middle block) is
locked, and a *trainable copy* Θ_c of it receives the condition c through zero convolutions Z(·; ·)
(1×1 convolutions with weight and bias initialised to 0):

    y   = F(x; Θ)                                                   (paper eq. 1, the locked block)
    y_c = F(x; Θ) + Z(F(x + Z(c; Θ_z1); Θ_c); Θ_z2)                 (paper eq. 2, with control)

At initialisation both Z are 0, so y_c = y: the ControlNet starts as "no control" and cannot damage the
pretrained model, yet the gradients w.r.t. the zero convolutions' weights are non-zero (they are the
inputs of the convolutions), so they leave 0 at the first step. In diffusers' ``ControlNetModel``: the
condition embedding (``controlnet_cond_embedding``: small strided convolutions, the paper's encoder E,
c_f = E(c_i), that maps the 512×512 control image to the 64×64 latent grid; here 64×64 → 16×16) ends in a zero
convolution (Z(c; Θ_z1)); the trainable copy is ``conv_in`` + ``down_blocks`` + ``mid_block`` copied from
the U-Net (:func:`make_controlnet`); ``controlnet_down_blocks`` / ``controlnet_mid_block`` are the output
zero convolutions (Z(·; Θ_z2)), one per skip connection. Their outputs, times the *conditioning scale*,
are added to the locked U-Net's skip connections and middle block
(``down_block_additional_residuals``, ``mid_block_additional_residual``); scale 0 is the plain model.

Sampling options of ``StableDiffusionControlNetPipeline`` exposed here: ``controlnet_conditioning_scale``
(the factor on every residual), ``control_guidance_start/end`` (the fraction of the steps during which the
residuals are added at all) and ``guess_mode`` (the ControlNet sees only the conditional CFG branch and its
residuals are scaled from 0.1 (shallow) to 1.0 (middle block), log-spaced: the paper's "prompt-free"
mode, meant for an empty prompt with guidance 3–5).

The built-in ControlNet is ``checkpoints/tiny_sd_controlnet`` (a ``ControlNetModel`` folder, trained by
``python -m playground train tiny_sd_controlnet``, see :mod:`.controlnet_train`); on a GPU host
``PLAYGROUND_CONTROLNET_MODEL`` (e.g. ``lllyasviel/sd-controlnet-canny``) runs with the Hub base model of
``PLAYGROUND_TXT2IMG_MODEL``. Only settings choose models, never a request.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core import validation as V
from ..core.errors import UserInputError
from ..core.images import with_params
from ..core.service import Service
from ..core.settings import Settings
from ..diffusion.sampler import _DIFFUSERS_IMPORT
from .hub import family, fetch
from .service import BUILTIN, DEFAULT_SCHEDULER, GenRequest, HubFallback, LoadedSD, Txt2ImgService, to_rgb

log = logging.getLogger("playground")

NAME = "tiny_sd_controlnet"                 # checkpoints/<NAME>: the built-in ControlNetModel folder
TRAIN_COMMAND = "python -m playground train tiny_sd_controlnet"
BUILTIN_SIZE = 64                           # the built-in model's image side (when nothing is loaded yet)
DEFAULT_LOW, DEFAULT_HIGH = 100, 200        # Canny thresholds (those of lllyasviel's annotator)
MAX_CONDITIONING_SCALE = 2.0
# The tab's guidance scale. Chosen on two selection sets (held-out scenes of seeds 1 and 2, 200 each; not the
# evaluation's seed 0), conditioning scale 1: colour named in the prompt 91.5 / 92.5 % at guidance 3 against
# 86.5 / 94.0 % at 7.5 (88.0 % at 5, seed 1 only), edge F1 0.971 / 0.976 against 0.926 / 0.932. The edges
# already fix the layout, so the control needs less of CFG's push than text alone (7.5 in the text-to-image tab).
DEFAULT_GUIDANCE = 3.0
OVERLAY_COLOUR = (0, 255, 255)              # cyan: none of the scenes' six hues
EDGES_ALPHA = 0.85                          # how opaque the overlaid edges are
# the text-to-image pipeline classes that have a ControlNet counterpart built from the same parts
CONTROLNET_PIPELINES = {"StableDiffusionPipeline": "StableDiffusionControlNetPipeline",
                        "StableDiffusionXLPipeline": "StableDiffusionXLControlNetPipeline"}


# ------------------------------------------------------------------------------------ Canny
def check_thresholds(low: Any, high: Any) -> tuple[int, int, list[str]]:
    """Canny's hysteresis thresholds as whole numbers in 0 … 255 (on the gradient magnitude of 8-bit
    images), or :class:`UserInputError`. Reversed thresholds (low > high) are swapped with a notice —
    the meaning is unambiguous and OpenCV would swap them silently."""
    lo = V.check_int(low, "Low threshold", 0, 255)
    hi = V.check_int(high, "High threshold", 0, 255)
    notices: list[str] = []
    if lo > hi:
        lo, hi = hi, lo
        notices.append(f"The low threshold was above the high one: swapped (low {lo}, high {hi}).")
    return lo, hi, notices


def canny_array(rgb: np.ndarray, low: int, high: int) -> np.ndarray:
    """``cv2.Canny`` of an (H, W, 3) or (H, W) uint8 image: (H, W) uint8, 255 on edges, 0 elsewhere
    (colour images: per pixel the channel with the largest gradient, see the module docstring)."""
    import cv2

    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.Canny(arr, float(low), float(high))


def canny_edges(image: Image.Image, low: Any = DEFAULT_LOW, high: Any = DEFAULT_HIGH) -> tuple[Image.Image, list[str]]:
    """The Canny edges of ``image`` at its own size: (PIL "L" image, 255 = edge, 0 = none; notices).
    Transparent pixels are put on white first; the thresholds are checked by :func:`check_thresholds`.
    Resizing to the model's size is the caller's job (:meth:`ControlNetService.canny`)."""
    lo, hi, notices = check_thresholds(low, high)
    rgb, note = to_rgb(image)
    if note:
        notices.append(note)
    edges = canny_array(np.asarray(rgb), lo, hi)
    if not edges.any():
        notices.append(f"Canny found no edges at thresholds {lo}/{hi}: lower them (the ControlNet would have "
                       "nothing to follow).")
    return Image.fromarray(edges, "L"), notices


def control_tensor(edges: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Edge maps (B, H, W) with values 0/255 → the control image c as the pipeline feeds it to the
    ControlNet: (B, 3, H, W) float in [0, 1] (its ``control_image_processor`` does not normalise to [-1, 1])."""
    x = torch.as_tensor(np.asarray(edges)).float() / 255.0
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def overlay_edges(result: Image.Image, edges: Image.Image, colour: tuple[int, int, int] = OVERLAY_COLOUR,
                  alpha: float = EDGES_ALPHA) -> Image.Image:
    """The control edges drawn over ``result`` (resized with nearest neighbour if the sizes differ)."""
    base = result.convert("RGB")
    mask = edges.convert("L")
    if mask.size != base.size:
        mask = mask.resize(base.size, Image.NEAREST)
    mask = mask.point(lambda v: int(round(alpha * 255)) if v > 127 else 0)
    return Image.composite(Image.new("RGB", base.size, colour), base, mask)


# ------------------------------------------------------------------------------------ the model
def embedding_channels(vae_scale_factor: int) -> tuple[int, ...]:
    """``conditioning_embedding_out_channels`` for a VAE of factor f: one strided convolution per halving,
    so log2(f) + 1 entries — (16, 32, 64) for our f = 4 (64×64 → 16×16); diffusers' default
    (16, 32, 96, 256) is for SD's f = 8."""
    n = int(round(math.log2(vae_scale_factor)))
    assert 2 ** n == vae_scale_factor, f"the VAE factor must be a power of 2, got {vae_scale_factor}"
    return tuple(16 * 2 ** i for i in range(n + 1))


def base_weights_hash(pipe: Any) -> str:
    """The identity of what a ControlNet is trained against: the base's U-Net, text encoder and the encoder side of
    its autoencoder (the latents come from it), not the decoder, which tiny_sd's stages 3-4 fine-tune without
    moving the latent space."""
    from .evaluate import weights_hash
    from .train import DECODER_PARTS

    return weights_hash(pipe, skip=tuple(f"vae.{p}" for p in DECODER_PARTS))


def make_controlnet(unet: Any, vae_scale_factor: int = 4) -> Any:
    """The ControlNet of ``unet``: ``ControlNetModel.from_unet`` copies its configuration and the weights of
    ``conv_in``, the time embedding, the down blocks and the middle block (the trainable copy Θ_c of paper
    eq. 2); the condition embedding's last convolution and every output convolution are zero-initialised
    (the zero convolutions Z). The condition embedding downsamples by ``vae_scale_factor``."""
    with _DIFFUSERS_IMPORT:
        from diffusers import ControlNetModel
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding_channels(vae_scale_factor))


def zero_convolutions(controlnet: Any) -> dict[str, torch.nn.Module]:
    """The zero convolutions of a ``ControlNetModel`` by name (for tests and the lesson's diagram)."""
    out = {"cond_embedding.conv_out": controlnet.controlnet_cond_embedding.conv_out,
           "mid_block": controlnet.controlnet_mid_block}
    out.update({f"down.{i}": m for i, m in enumerate(controlnet.controlnet_down_blocks)})
    return out


# ------------------------------------------------------------------------------------ service
@dataclass
class LoadedControl:
    """A ControlNet and the base model it belongs to."""

    base: LoadedSD
    controlnet: Any
    pipeline_cls: type                # StableDiffusionControlNetPipeline (built from base's parts)
    model: str                        # what is written into PNGs: "<base> + <controlnet>"
    builtin: bool

    @property
    def image_size(self) -> int:
        return self.base.image_size


class ControlNetService(HubFallback, Service):
    """Canny preview and ControlNet generation, on the parts of the text-to-image service's models."""

    uses_zero_gpu = True

    def __init__(self, txt2img: Txt2ImgService, settings: Settings | None = None) -> None:
        super().__init__(settings or txt2img.settings, txt2img.registry)
        self.txt2img = txt2img
        self._init_hub_note()

    def hub_models(self) -> list[tuple[str, str]]:
        hub, base = self.settings.controlnet_model, self.settings.txt2img_model
        return [(f"controlnet/hub/{hub}/{base}", hub)] if hub and base else []

    def require_ready(self) -> None:
        """The "Loading …" message while the ControlNet or the base model it steers is still loading."""
        if self.settings.controlnet_model:
            self.txt2img.require_ready()
        super().require_ready()

    def config_note(self) -> str:
        """Set when the text-to-image model is a configured one but no ControlNet is."""
        if self.settings.txt2img_model and not self.settings.controlnet_model:
            return (f"No ControlNet is configured (PLAYGROUND_CONTROLNET_MODEL): the built-in 64 px `{NAME}` on "
                    f"`{BUILTIN}` serves this tab.")
        return ""

    def depends_on(self) -> list[HubFallback]:
        return [self.txt2img] if self.settings.controlnet_model else []   # a configured ControlNet's base

    # ---- models ----------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.settings.checkpoints_dir / NAME

    def builtin_present(self) -> bool:
        return (self.folder / "config.json").exists() and any(self.folder.glob("*.safetensors"))

    def _hub_configured(self) -> bool:
        return bool(self.settings.controlnet_model) and not self._hub_failed

    def available(self) -> bool:
        """Is there a ControlNet to serve (a configured Hub pair, or ours with its base)?"""
        if self.settings.controlnet_model and self.settings.txt2img_model:
            return True
        return self.builtin_present() and self.txt2img.builtin_present()

    def _not_used(self, reason: str) -> None:
        hub = self.settings.controlnet_model
        self._fail_hub(f"The configured ControlNet {hub!r} is not used: {reason}. The built-in 64 px `{NAME}` on "
                       f"`{BUILTIN}` serves instead.", f"PLAYGROUND_CONTROLNET_MODEL={hub}: {reason}")

    def model(self) -> LoadedControl:
        """The ControlNet and its base, loaded once: the Hub ControlNet of ``settings.controlnet_model`` on
        the text-to-image service's Hub base model when both are set and load, else ours
        (``checkpoints/tiny_sd_controlnet`` on ``checkpoints/tiny_sd``), with :attr:`model_note` saying
        why a configured Hub ControlNet is not used."""
        hub = self.settings.controlnet_model
        if hub and not self._hub_failed:
            base = None
            if not self.settings.txt2img_model:
                self._not_used("it needs a Hub base model (PLAYGROUND_TXT2IMG_MODEL is empty; the built-in "
                               "tiny model has other shapes)")
            else:
                base = self.txt2img.model()
                if base.builtin:
                    self._not_used("the Hub base model could not be loaded " + (f"({self.txt2img.model_note})"
                                                                              if self.txt2img.model_note else ""))
            if base is not None and not base.builtin:
                key = f"controlnet/hub/{hub}/{base.model}"
                if self._deferred and key not in self.registry and not self._in_loader():
                    raise UserInputError(self.loading_message())
                try:
                    return self.registry.get(key, lambda: self._load_hub(hub, base))
                except Exception as exc:  # noqa: BLE001 - any failure: say so and serve the built-in model
                    self._not_used(f"it could not be loaded ({type(exc).__name__}: {str(exc)[:300]})")
        if not self.builtin_present():
            raise UserInputError("The ControlNet is not trained yet (no checkpoints/tiny_sd_controlnet): "
                                 f"{TRAIN_COMMAND}. The Canny preview works without it.")
        return self.registry.get(f"controlnet/{self.folder}", self._load_builtin)

    def _builtin_base(self) -> LoadedSD:
        """Our tiny_sd pipeline, shared with the text-to-image service (same registry key and loader)."""
        t = self.txt2img
        if not t.builtin_present():
            raise UserInputError("The text-to-image model is not trained yet (no checkpoints/tiny_sd): "
                                 "python -m playground train tiny_sd")
        return self.registry.get(f"txt2img/{t.folder}", t._load_builtin)

    @staticmethod
    def _controlnet_classes() -> dict[str, type]:
        with _DIFFUSERS_IMPORT:
            import diffusers

            return {n: getattr(diffusers, n) for n in ("ControlNetModel", *CONTROLNET_PIPELINES.values())}

    def _load_builtin(self) -> LoadedControl:
        base = self._builtin_base()
        classes = self._controlnet_classes()
        cn = classes["ControlNetModel"].from_pretrained(str(self.folder), use_safetensors=True, local_files_only=True)
        cn = cn.to(self.device).eval().requires_grad_(False)
        _check_compatible(cn, base)
        self._check_trained_on(base)
        return LoadedControl(base, cn, classes["StableDiffusionControlNetPipeline"], f"{BUILTIN} + {NAME}", True)

    def _check_trained_on(self, base: LoadedSD) -> None:
        """Warn (log and :attr:`model_note`) when the ControlNet was trained on other tiny_sd weights than
        the ones served (``base_weights`` in its ``training.json``): it still runs, but follows edges worse."""
        import json

        try:
            trained_on = json.loads((self.folder / "training.json").read_text()).get("base_weights")
        except (OSError, ValueError):
            return
        if trained_on and trained_on != base_weights_hash(base.pipe):
            with self._note_lock:
                self.model_note = (self.model_note + " The ControlNet was trained on another version of tiny_sd "
                                   "than the one served; it may follow the edges poorly. Retrain it: "
                                   f"{TRAIN_COMMAND}.").strip()
            log.warning("controlnet: trained on tiny_sd %s, serving other weights", trained_on)

    def _load_hub(self, model_id: str, base: LoadedSD) -> LoadedControl:
        """``ControlNetModel.from_pretrained`` (the base U-Net's dtype: fp16 on CUDA; safetensors only, no
        remote code) for the Hub base pipeline ``base``; refuses pairs that do not fit together."""
        classes = self._controlnet_classes()
        pipe_name = CONTROLNET_PIPELINES.get(type(base.pipe).__name__)
        if pipe_name is None:
            raise ValueError(f"no ControlNet pipeline for a {type(base.pipe).__name__} base "
                             f"(supported: {', '.join(CONTROLNET_PIPELINES)})")
        folder, variant = fetch(model_id, base.pipe.unet.dtype, self._say(model_id))
        cn = classes["ControlNetModel"].from_pretrained(folder, dtype=base.pipe.unet.dtype, use_safetensors=True,
                                                        variant=variant)
        if family(cn.config) != base.family:
            names = {"sdxl": "an SDXL", "sd": "an SD 1.x/2.x"}
            raise ValueError(f"it is {names[family(cn.config)]} ControlNet, but the base model {base.model!r} is "
                             f"{names[base.family]} model (set a ControlNet of the base's family)")
        cn = cn.to(self.device).eval().requires_grad_(False)
        _check_compatible(cn, base)
        log.info("controlnet: loaded %s on %s", model_id, base.model)
        return LoadedControl(base, cn, classes[pipe_name], f"{base.model} + {model_id}", False)

    def warmup(self) -> None:
        """Import OpenCV (the Canny preview's first call), load the models and run two tiny steps, so no
        visitor waits for the first-call set-up."""
        canny_array(np.zeros((8, 8, 3), np.uint8), DEFAULT_LOW, DEFAULT_HIGH)
        if not self.available():
            self._loaded.set()                        # nothing to load: the tab says "not trained yet"
            return
        try:
            self.load_in_background(self.model)
            if self.settings.zero_gpu:
                return
            size = self.image_size()
            img = Image.new("RGB", (size, size), "white")
            img.paste((255, 0, 0), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
            self.controlnet(img, "a red square", steps=2, guidance_scale=2.0, compare=False)
        except UserInputError:
            pass
        except Exception:  # noqa: BLE001 - runs in a background thread at start-up: log, never crash
            log.exception("controlnet warm-up failed")

    def image_size(self) -> int:
        """The side of the control image: the served base model's. With a configured ControlNet pair that is
        still loading in the background, a :class:`UserInputError` says so (the preview would otherwise change
        size once it is loaded); without one, the built-in model's 64 px, read without loading anything."""
        if self._hub_configured() and self.settings.txt2img_model:
            return self.model().image_size
        return BUILTIN_SIZE

    # ---- validation ------------------------------------------------------------------------------
    @staticmethod
    def check_conditioning_scale(value: Any) -> float:
        return V.check_float(value, "Conditioning scale", 0.0, MAX_CONDITIONING_SCALE)

    @staticmethod
    def check_control_window(start: Any, end: Any) -> tuple[float, float]:
        """0 ≤ start < end ≤ 1: the fraction of the denoising steps during which the ControlNet acts."""
        s = V.check_float(start, "Control start", 0.0, 1.0)
        e = V.check_float(end, "Control end", 0.0, 1.0)
        if not s < e:
            raise UserInputError(f"Control start ({s:g}) must be below control end ({e:g}): the ControlNet acts "
                                 "from start to end, as fractions of the steps (0 = first step, 1 = last).")
        return s, e

    @staticmethod
    def _check_flag(value: Any, name: str) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        raise UserInputError(f"{name} must be true or false, got {value!r}.")

    # ---- Canny preview ---------------------------------------------------------------------------
    def canny(self, image: Any, low: Any = DEFAULT_LOW, high: Any = DEFAULT_HIGH) -> dict[str, Any]:
        """The live preview: ``image`` (upload, array, file, or a Gradio ImageEditor value = a drawn sketch)
        centre-cropped to a square and resized to the served model's side (:meth:`image_size`), then
        :func:`canny_edges`; runs no network. Returns ``{"edges": PIL "L" (255 = edge), "notices", "seconds",
        "edge_pixels", "size"}``."""
        start = time.perf_counter()
        lo, hi, notices = check_thresholds(low, high)          # before the image: cheap errors first
        size = self.image_size()
        rgb, notes = self.txt2img.prepare_image(image, size)
        edges, more = canny_edges(rgb, lo, hi)
        return {"edges": edges, "notices": notices + notes + more, "seconds": time.perf_counter() - start,
                "edge_pixels": int(np.count_nonzero(np.asarray(edges))), "size": size}

    # ---- generation --------------------------------------------------------------------------------
    def controlnet(self, image: Any, prompt: Any = "", negative_prompt: Any = "", low: Any = DEFAULT_LOW,
                   high: Any = DEFAULT_HIGH, conditioning_scale: Any = 1.0, steps: Any = 25,
                   guidance_scale: Any = DEFAULT_GUIDANCE, seed: Any = 0, scheduler: Any = DEFAULT_SCHEDULER,
                   guess_mode: Any = False, control_start: Any = 0.0, control_end: Any = 1.0,
                   compare: Any = True) -> dict[str, Any]:
        """Generate from ``prompt`` under the Canny edges of ``image``.

        Arguments: ``image`` as in :meth:`canny`; ``low``/``high`` Canny thresholds 0 … 255 (swapped with a
        notice if reversed); ``conditioning_scale`` 0 … 2 (0 = no control); ``steps`` 1 … 100;
        ``guidance_scale`` 1 … 30; ``seed``; ``scheduler`` (as text to image); ``guess_mode``; the control
        window 0 ≤ ``control_start`` < ``control_end`` ≤ 1; ``compare``: also generate without control (same
        seed, the plain text-to-image pipeline — exactly what conditioning scale 0 gives).

        Returns ``{"edges"`` (the control image, PIL "L"), ``"result"`` (PIL, PNG parameters attached),
        ``"without"`` (PIL or None), ``"overlay"`` (the edges drawn over the result), ``"notices"``,
        ``"seconds"`` (the ControlNet run), ``"seconds_without"``, ``"model"``, ``"conditioning_scale"``,
        ``"control_start"``, ``"control_end"``, ``"guess_mode"``, ``"low"``, ``"high"}``."""
        t = self.txt2img
        prompt = t._text(prompt, "prompt")
        negative = t._text(negative_prompt, "negative prompt")
        steps = t.check_steps(steps)
        guidance = t.check_guidance(guidance_scale)
        scheduler = t.check_scheduler(scheduler)
        seed = V.check_seed(seed, self.limits)
        lo, hi, notices = check_thresholds(low, high)
        scale = self.check_conditioning_scale(conditioning_scale)
        c_start, c_end = self.check_control_window(control_start, control_end)
        guess = self._check_flag(guess_mode, "Guess mode")
        compare = self._check_flag(compare, "compare")
        served = self.model()
        base = served.base
        rgb, notes = t.prepare_image(image, served.image_size)
        edges, more = canny_edges(rgb, lo, hi)
        notices += notes + more
        notices += t._notices(base, prompt, negative, guidance) if self.settings.controlnet_model else \
            [n for n in t._notices(base, prompt, negative, guidance) if n != t.model_note]
        notices += [n for n in (self.model_note, self.config_note()) if n]
        if scale == 0:
            notices.append("Conditioning scale 0: the ControlNet's residuals are multiplied by 0 — this is the "
                           "plain text-to-image model.")
        if guess and prompt.strip() and guidance > 5:
            notices.append("Guess mode is meant for an empty prompt with a guidance scale of 3–5 (the paper's "
                           "prompt-free setting).")
        req = GenRequest(prompt, negative, steps, guidance, seed, scheduler, 1, tuple(notices))
        size = served.image_size
        common = dict(prompt=prompt, negative_prompt=negative or None, num_inference_steps=steps,
                      guidance_scale=guidance, height=size, width=size)
        pipe = base.fresh(scheduler, cls=served.pipeline_cls, controlnet=served.controlnet)
        out = self._run(base, pipe, dict(common, image=edges.convert("RGB"), controlnet_conditioning_scale=scale,
                                         guess_mode=guess, control_guidance_start=c_start,
                                         control_guidance_end=c_end, generator=t._generators(seed, 1)))
        params = req.params(served.model, kind="controlnet", seed=seed, low=lo, high=hi, conditioning_scale=scale,
                            guess_mode=guess, control_start=c_start, control_end=c_end)
        result = with_params(out["output"].images[0], params)
        without, seconds_without = None, 0.0
        if compare:
            plain = base.fresh(scheduler)
            out0 = self._run(base, plain, dict(common, generator=t._generators(seed, 1)))
            without = with_params(out0["output"].images[0], req.params(base.model, seed=seed))
            seconds_without = out0["seconds"]
        return {"edges": edges, "result": result, "without": without, "overlay": overlay_edges(result, edges),
                "notices": list(req.notices), "seconds": out["seconds"], "seconds_without": seconds_without,
                "model": served.model, "conditioning_scale": scale, "control_start": c_start,
                "control_end": c_end, "guess_mode": guess, "low": lo, "high": hi}

    def _run(self, base: LoadedSD, pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """One pipeline call through the text-to-image service's worker-thread runner (no previews)."""
        for kind, info in self.txt2img._stream(base, pipe, kwargs, None, math.inf):
            if kind == "done":
                return info
        raise RuntimeError("the pipeline run ended without a result")


def _check_compatible(cn: Any, base: LoadedSD) -> None:
    """A ControlNet fits a base U-Net when its channels, cross-attention width and condition embedding
    (one halving per VAE halving) match; otherwise the pipeline would fail with a shape error mid-run."""
    u, c = base.pipe.unet.config, cn.config
    problems = []
    if tuple(u.block_out_channels) != tuple(c.block_out_channels):
        problems.append(f"channels {tuple(c.block_out_channels)} vs the U-Net's {tuple(u.block_out_channels)}")
    if u.cross_attention_dim != c.cross_attention_dim:
        problems.append(f"cross-attention width {c.cross_attention_dim} vs {u.cross_attention_dim}")
    factor = int(base.pipe.vae_scale_factor)
    halvings = len(c.conditioning_embedding_out_channels) - 1
    if 2 ** halvings != factor:
        problems.append(f"its condition embedding downsamples {2 ** halvings}× but the VAE {factor}×")
    if problems:
        raise ValueError(f"the ControlNet does not fit the base model {base.model!r}: " + "; ".join(problems))
