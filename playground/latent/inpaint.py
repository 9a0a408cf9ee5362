"""Inpainting: repaint the masked part of an image from a prompt, keep every other pixel exactly.

Two methods on our tiny Stable Diffusion (or, on a GPU host, the Hub model named by
``PLAYGROUND_INPAINT_MODEL``), both run by diffusers' ``StableDiffusionInpaintPipeline``:

1. **Inpainting U-Net (9 input channels)** — the SD-inpainting recipe (Rombach et al. 2022, LDM §4.5 /
   the ``stable-diffusion-inpainting`` model card): the U-Net sees, concatenated along the channels,

       ε_θ( [z_t ; m ; E(x ⊙ (1 − m))], t, τ_θ(y) )      4 + 1 + 4 = 9 channels (16×16 each here)

   z_t the noisy latents, m the mask at latent resolution (1 = repaint), E(x ⊙ (1 − m)) the latents of
   the image with the masked part set to 0 (mid-gray in [-1, 1]). It is the text-to-image U-Net with 5
   extra, zero-initialised input channels (:func:`make_inpaint_unet`), fine-tuned on random masks
   (``inpaint_train.py``), so it *knows* what surrounds the hole while it denoises.
2. **Latent blending (plain 4-channel U-Net)** — RePaint-style (Lugmayr et al. 2022, eq. 8, in latent
   space as diffusers does): after every step the known region is replaced by the original latents
   noised to the next timestep,

       z_{t−1} ← (1 − m) ⊙ (√ᾱ_{t−1} E(x) + √(1 − ᾱ_{t−1}) ε) + m ⊙ z_{t−1}

   The unchanged text-to-image U-Net never sees the mask: the hole only learns about its surroundings
   through the blended latents, which is why its seams are often visible.

In both, pixels outside the mask still change through the VAE round trip D(E(x)) ≠ x, so the result is
*pasted back*: out = m̃ · generated + (1 − m̃) · original with m̃ the feathered mask; where m̃ = 0 the
output is the original, bit for bit (:func:`paste_back`).

Masks (pure functions, numpy / PIL only): :func:`mask_from_editor` turns a Gradio ``ImageMask`` value (or
an uploaded mask) into an image and a 0/255 mask, :func:`prepare_mask` dilates and feathers it,
:func:`paste_back` composites. No gradio import here; every user error is a
:class:`~playground.core.errors.UserInputError`.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy import ndimage

from ..core import validation as V
from ..core.errors import UserInputError
from ..core.images import with_params
from ..core.registry import ModelRegistry
from ..core.service import Service
from ..core.settings import Limits, Settings
from ..diffusion.sampler import _DIFFUSERS_IMPORT
from .hub import load_pipeline
from .service import DEFAULT_SCHEDULER, GenRequest, HubFallback, LoadedSD, Txt2ImgService, to_rgb

log = logging.getLogger("playground")

NAME = "tiny_sd_inpaint"                       # checkpoints/<NAME>: our 9-channel inpainting pipeline
TRAIN_COMMAND = "python -m playground train tiny_sd_inpaint"
METHOD_NINE = "inpainting U-Net (9 channels)"
METHOD_BLEND = "latent blending (plain U-Net)"
METHODS = (METHOD_NINE, METHOD_BLEND)
MAX_BLUR = 32                                  # px (Gaussian σ of the feather)
MAX_DILATE = 32                                # px
MAX_PADDING = 256                              # px around the mask in "only masked" mode
DEFAULT_BLUR = 2                               # at 64×64 a 2 px feather already spans ≈ 6 px
MASK_THRESHOLD = 127                           # uploaded masks: luminance (or alpha) above this = repaint
CHECKER = 4                                    # px per square of the "masked" display's checkerboard


# ============================================================================ masks

def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)


def _alpha(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGBA"))[..., 3]


def _load(value: Any, limits: Limits, name: str) -> Image.Image:
    """A PIL image from a PIL image / numpy array / file path / bytes (``check_image``'s rules)."""
    return V.check_image(value, limits, name)


def layer_mask(layer: Image.Image) -> np.ndarray:
    """The painted pixels of one editor layer (bool H×W): alpha > 0 where the layer has an alpha channel
    (a stroke in any colour counts), else any non-black pixel."""
    if _has_alpha(layer):
        return _alpha(layer) > 0
    rgb, _ = to_rgb(layer)
    return np.asarray(rgb).max(axis=-1) > 0


def uploaded_mask(mask: Image.Image) -> np.ndarray:
    """An uploaded mask image (white = repaint) as bool H×W, whatever its mode: where it has real
    transparency, its alpha > 127 (opaque strokes on a transparent sheet); otherwise its luminance > 127
    (16-bit and float images are first rescaled to 8 bits, colour ones converted to luminance)."""
    if _has_alpha(mask):
        alpha = _alpha(mask)
        if alpha.min() < 255:
            return alpha > MASK_THRESHOLD
    rgb, _ = to_rgb(mask)
    return np.asarray(rgb.convert("L")) > MASK_THRESHOLD


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask resized (nearest neighbour) to ``size`` = (width, height)."""
    img = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(size, Image.NEAREST)
    return np.asarray(img) > 0


def mask_from_editor(value: Any, mask: Any = None, limits: Limits | None = None
                     ) -> tuple[Image.Image, Image.Image, list[str]]:
    """The image to inpaint and its mask from a Gradio 6 ``ImageMask`` / ``ImageEditor`` value.

    ``value`` is ``{"background", "layers", "composite"}`` (each a PIL image, numpy array or file path;
    ``layers`` a list) or a plain image. The mask is the union over the layers of their painted pixels
    (:func:`layer_mask`); a separately uploaded ``mask`` (white = repaint, any mode: :func:`uploaded_mask`)
    wins over the layers. Returns (RGB image, mask as an ``L`` image of 0/255, notices for the visitor):
    transparency composited onto white, masks of another size resized (nearest), an empty mask ("nothing
    will change") and a full one (all repainted = text to image) all get a notice. No image, or a file that
    is not an image, raises :class:`UserInputError`."""
    limits = limits or Limits()
    notices: list[str] = []
    layers: list[Any] = []
    if isinstance(value, dict):
        background = value.get("background")
        layers = [x for x in (value.get("layers") or []) if x is not None]
        if background is None and value.get("composite") is not None:
            background = value["composite"]
            notices.append("The editor sent no background image: its composite (with the strokes) was used.")
    else:
        background = value
    if background is None:
        raise UserInputError("Please upload an image to inpaint first (then paint the mask over it).")
    img = _load(background, limits, "image")
    if _has_alpha(img) and _alpha(img).min() == 255:
        img = img.convert("RGB")                      # an opaque RGBA canvas: nothing to composite
    img, note = to_rgb(img)
    if note:
        notices.append(note)
    size = img.size

    if mask is not None:
        m_img = _load(mask, limits, "mask")
        m = uploaded_mask(m_img)
        if m_img.size != size:
            notices.append(f"The mask is {m_img.width}×{m_img.height} but the image is {size[0]}×{size[1]}: "
                           f"the mask was resized to fit (nearest neighbour).")
            m = _resized(m, size)
        if layers:
            notices.append("An uploaded mask was given: the strokes painted in the editor were ignored.")
    else:
        m = np.zeros((size[1], size[0]), dtype=bool)
        resized = False
        for i, layer in enumerate(layers):
            l_img = _load(layer, limits, f"mask layer {i + 1}")
            lm = layer_mask(l_img)
            if l_img.size != size:
                lm, resized = _resized(lm, size), True
            m |= lm
        if resized:
            notices.append("A mask layer had another size than the image: it was resized to fit (nearest "
                           "neighbour).")
    if not m.any():
        notices.append("The mask is empty: nothing will change. Paint over the part to repaint (or upload a "
                       "mask, white = repaint).")
    elif m.all():
        notices.append("The mask covers the whole image: everything is repainted, which is text to image "
                       "(the picture only fixes the size).")
    return img, Image.fromarray(m.astype(np.uint8) * 255, "L"), notices


def fit_mask(mask: Image.Image, size: int) -> Image.Image:
    """The mask under the same geometry as :meth:`Txt2ImgService.prepare_image` applies to its image
    (centre square crop, then resize to ``size``). Downscaling keeps every pixel that was painted at all
    (area average > 0): a thin stroke never vanishes; upscaling is nearest neighbour. 0/255 ``L``."""
    w, h = mask.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        mask = mask.crop((left, top, left + side, top + side))
    if mask.width > size:
        mask = mask.convert("L").resize((size, size), Image.BOX)
        return Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, "L")
    if mask.width < size:
        mask = mask.resize((size, size), Image.NEAREST)
    return Image.fromarray((np.asarray(mask.convert("L")) > 0).astype(np.uint8) * 255, "L")


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius


def prepare_mask(mask: Image.Image | np.ndarray, blur_px: float = DEFAULT_BLUR, dilate_px: int = 0) -> np.ndarray:
    """The mask as used: dilated by ``dilate_px`` (a max filter over a disk), then feathered outwards by a
    Gaussian of σ = ``blur_px`` (PIL's ``GaussianBlur``, what diffusers' ``VaeImageProcessor.blur`` runs):

        m̃ = max(m_d, G_σ * m_d),   m_d = m ⊕ disk(dilate_px)

    so every painted pixel stays fully repainted (m̃ = 1 there) and the feather only reaches outwards,
    where it blends the generated image into the original. Returns float32 H×W in [0, 1], quantised to
    k/255 (the exact values of the ``L`` image the service returns and pastes with)."""
    m = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask) > 0
    if dilate_px > 0 and m.any():
        m = ndimage.binary_dilation(m, structure=_disk(int(dilate_px)))
    hard = m.astype(np.uint8) * 255
    if blur_px > 0:
        soft = np.asarray(Image.fromarray(hard, "L").filter(ImageFilter.GaussianBlur(float(blur_px))))
        hard = np.maximum(hard, soft)
    return hard.astype(np.float32) / 255.0


def mask_image(soft: np.ndarray) -> Image.Image:
    """A float mask in [0, 1] as an 8-bit ``L`` image (exact for :func:`prepare_mask`'s k/255 values)."""
    return Image.fromarray(np.clip(np.round(soft * 255.0), 0, 255).astype(np.uint8), "L")


def paste_back(original: Image.Image, generated: Image.Image, soft_mask: np.ndarray | Image.Image) -> Image.Image:
    """out = m̃ · generated + (1 − m̃) · original per pixel (8-bit, integer arithmetic with m̃ in k/255), so
    where m̃ = 0 the output *is* the original (difference exactly 0) and where m̃ = 1 it is the generated
    image. ``generated`` is resized to the original's size if needed."""
    orig = np.asarray(original.convert("RGB"), dtype=np.int32)
    gen_img = generated.convert("RGB")
    if gen_img.size != original.size:
        gen_img = gen_img.resize(original.size, Image.LANCZOS)
    gen = np.asarray(gen_img, dtype=np.int32)
    if isinstance(soft_mask, Image.Image):
        k = np.asarray(soft_mask.convert("L"), dtype=np.int32)
    else:
        k = np.clip(np.round(np.asarray(soft_mask, dtype=np.float64) * 255.0), 0, 255).astype(np.int32)
    if k.shape != orig.shape[:2]:
        raise ValueError(f"mask {k.shape} and image {orig.shape[:2]} differ in size")
    k = k[..., None]
    out = (gen * k + orig * (255 - k) + 127) // 255          # k = 0: (255·orig + 127) // 255 = orig exactly
    return Image.fromarray(out.astype(np.uint8), "RGB")


def masked_view(image: Image.Image, soft_mask: np.ndarray | Image.Image) -> Image.Image:
    """The input with the repainted area shown as a gray checkerboard (blended by the feathered mask)."""
    w, h = image.size
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // CHECKER + xx // CHECKER) % 2 == 0)
    checker = np.where(light[..., None], 200, 150).astype(np.uint8).repeat(3, axis=-1)
    return paste_back(image, Image.fromarray(checker, "RGB"), soft_mask)


def changed_pixels(a: Image.Image, b: Image.Image) -> int:
    """How many pixel positions differ in any channel."""
    return int((np.asarray(a.convert("RGB")) != np.asarray(b.convert("RGB"))).any(axis=-1).sum())


def box_mask(box: tuple[float, float, float, float], size: int = 64, grow: float = 3.0, unit: float = 64.0
             ) -> Image.Image:
    """A 0/255 mask covering ``box`` (left, top, right, bottom in ``unit`` coordinates, e.g. a scene
    object's ``.box``) grown by ``grow`` px on every side, every touched pixel included."""
    s = size / unit
    left, top, right, bottom = box
    x0, y0 = max(0, math.floor(left * s - grow)), max(0, math.floor(top * s - grow))
    x1, y1 = min(size, math.ceil(right * s + grow)), min(size, math.ceil(bottom * s + grow))
    m = np.zeros((size, size), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return Image.fromarray(m, "L")


# ============================================================================ the 9-channel U-Net

def make_inpaint_unet(unet: Any) -> Any:
    """The SD-inpainting U-Net made from a text-to-image U-Net: ``in_channels`` 4 → 9, input order
    [z_t (4) ; mask (1) ; masked-image latents (4)] as ``StableDiffusionInpaintPipeline`` concatenates
    them. Every weight is copied; the new input channels of ``conv_in`` start at zero, so before any
    fine-tuning ε_θ([z_t; m; z_m]) = ε_θ(z_t) for every mask (the recipe of the SD-inpainting model card:
    "5 additional input channels … zero-initialized after restoring the non-inpainting checkpoint")."""
    with _DIFFUSERS_IMPORT:
        from diffusers import UNet2DConditionModel
    c = int(unet.config.in_channels)
    if c != 4:
        raise ValueError(f"expected a 4-channel text-to-image U-Net, got in_channels={c}")
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    config["in_channels"] = 9
    new = UNet2DConditionModel.from_config(config)
    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    w = state["conv_in.weight"]                                           # (C, 4, 3, 3)
    extra = torch.zeros((w.shape[0], 5, *w.shape[2:]), dtype=w.dtype, device=w.device)
    state["conv_in.weight"] = torch.cat([w, extra], dim=1)                # (C, 9, 3, 3)
    new.load_state_dict(state)
    param = next(unet.parameters())
    if param.dtype != torch.float32 or param.device.type != "cpu":
        new = new.to(device=param.device, dtype=param.dtype)
    return new


# ============================================================================ the service

def _family_name(fam: str) -> str:
    return "an SDXL model" if fam == "sdxl" else "an SD 1.x/2.x model"


class InpaintService(HubFallback, Service):
    """Inpainting with either method, on top of :class:`Txt2ImgService` (its validation, its streamed
    pipeline runner, its base model for the blending method)."""

    uses_zero_gpu = True

    def __init__(self, txt2img: Txt2ImgService, settings: Settings | None = None,
                 registry: ModelRegistry | None = None) -> None:
        super().__init__(settings or txt2img.settings, registry or txt2img.registry)
        self.txt2img = txt2img
        self._init_hub_note()

    def hub_models(self) -> list[tuple[str, str]]:
        hub = self.settings.inpaint_model
        return [(f"inpaint/hub/{hub}", hub)] if hub else []

    def _fallback_text(self) -> str:
        return f"the built-in 64 px inpainting model `{NAME}`"

    def depends_on(self) -> list[HubFallback]:
        return [self.txt2img]                     # the blending method's model

    def require_ready(self) -> None:
        """The "Loading …" message while this tab's models — its own and the text-to-image model the blending
        method uses — are still loading in the background (both: one ZeroGPU worker serves both methods)."""
        self.txt2img.require_ready()
        super().require_ready()

    def config_note(self) -> str:
        """Set when the text-to-image model is a configured one but no inpainting model is."""
        if self.settings.txt2img_model and not self.settings.inpaint_model:
            return (f"No inpainting model is configured (PLAYGROUND_INPAINT_MODEL): the 9-channel method is served "
                    f"by the built-in 64 px `{NAME}`; latent blending uses the text-to-image model.")
        return ""

    # ---- models --------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.settings.checkpoints_dir / NAME

    def builtin_present(self) -> bool:
        return (self.folder / "model_index.json").exists()

    def nine_available(self) -> bool:
        """Can the 9-channel method run (a configured Hub model, or our trained checkpoint)?"""
        return bool(self.settings.inpaint_model) or self.builtin_present()

    def base_available(self) -> bool:
        """Can the latent-blending method run (the text-to-image model it uses is there)?"""
        return self.txt2img.available()

    def available(self) -> bool:
        """Is the 9-channel model there (as :meth:`Txt2ImgService.available`: this service's own model)?
        The blending method needs only :meth:`base_available`."""
        return self.nine_available()

    def methods_available(self) -> list[str]:
        out = [METHOD_NINE] if self.nine_available() else []
        return out + ([METHOD_BLEND] if self.base_available() else [])

    def image_size(self) -> int:
        """The side of the images the inpainting models work at: the 9-channel model's (else the base's).
        The built-in models' sizes are read from their folders' config files, without loading them."""
        if self.settings.inpaint_model and not self._hub_failed:
            try:
                return self.nine_model().image_size
            except UserInputError:
                if self.loading():
                    raise
        for folder, present in ((self.folder, self.builtin_present()),
                                (self.txt2img.folder, self.txt2img.builtin_present())):
            if present and not (folder == self.txt2img.folder and self.settings.txt2img_model):
                unet = json.loads((folder / "unet" / "config.json").read_text())
                vae = json.loads((folder / "vae" / "config.json").read_text())
                return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
        return self.txt2img.model().image_size

    @staticmethod
    def _classes(*names: str) -> dict[str, type]:
        return Txt2ImgService._classes("StableDiffusionInpaintPipeline", *names)

    def nine_model(self) -> LoadedSD:
        """The 9-channel inpainting pipeline, loaded once: the Hub model of ``settings.inpaint_model`` when
        set (falling back to ours, with :attr:`model_note` saying why, if it cannot be loaded), else
        ``checkpoints/tiny_sd_inpaint``."""
        hub = self.settings.inpaint_model
        m = self._try_hub(f"inpaint/hub/{hub}", hub, lambda: self._load_hub(hub), "inpainting model",
                          "PLAYGROUND_INPAINT_MODEL")
        if m is not None:
            return m
        if not self.builtin_present():
            raise UserInputError((f"{self.model_note} " if self.model_note else "") +
                                 f"The 9-channel inpainting model is not trained yet (no checkpoints/{NAME}): "
                                 f"{TRAIN_COMMAND}. The latent-blending method works without it.")
        return self.registry.get(f"inpaint/{self.folder}", self._load_builtin)

    def _load_builtin(self) -> LoadedSD:
        classes = self._classes()
        cls = classes["StableDiffusionInpaintPipeline"]
        pipe = cls.from_pretrained(str(self.folder), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False, use_safetensors=True, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        return LoadedSD(pipe, cls, NAME, True, scheduler_classes=classes)

    def _load_hub(self, model_id: str) -> LoadedSD:
        """A Hub (or local) diffusers inpainting pipeline (:func:`.hub.load_pipeline`: fp16 on CUDA with the
        fp16 weights where the repository has them, safetensors only, never remote code, the configured VAE;
        model CPU offload (runs then serialised) or attention slicing with little free GPU memory)."""
        classes = self._classes("AutoPipelineForInpainting")
        pipe, offload, notes = load_pipeline(classes["AutoPipelineForInpainting"], model_id, self.device,
                                      self.settings.vae_model, self._say(model_id), self.settings.zero_gpu,
                                      self.settings.dtype)
        self._warn(notes)
        log.info("inpaint: loaded %s (%s, offload=%s)", model_id, type(pipe).__name__, offload)
        return LoadedSD(pipe, type(pipe), model_id, False, offload, scheduler_classes=classes)

    def _blend_pipeline_class(self, base: LoadedSD) -> type:
        """The inpainting pipeline class for the text-to-image pipeline ``base`` (SD 1.x/2.x:
        ``StableDiffusionInpaintPipeline``; others through ``AutoPipelineForInpainting.from_pipe``)."""
        classes = self._classes("AutoPipelineForInpainting")
        if base.builtin or type(base.pipe).__name__ == "StableDiffusionPipeline":
            return classes["StableDiffusionInpaintPipeline"]
        return self.registry.get(f"inpaint/blend-class/{base.model}",
                                 lambda: type(classes["AutoPipelineForInpainting"].from_pipe(base.pipe)))

    def _pipeline(self, method: str, scheduler: str) -> tuple[LoadedSD, Any]:
        """(the loaded model, a fresh per-request inpainting pipeline) for ``method``."""
        if method == METHOD_NINE:
            m = self.nine_model()
            return m, m.fresh(scheduler)
        m = self.txt2img.model()
        return m, m.fresh(scheduler, cls=self._blend_pipeline_class(m))

    def warmup(self) -> None:
        """Load the available models (as the background loader: see :class:`HubFallback`) and run two tiny
        steps of each method (first-call set-up). On ZeroGPU the main process has no GPU: load only."""
        def load() -> None:
            if self.nine_available():
                self.nine_model()
            if self.base_available():                # and the blending method's pipeline class
                self._blend_pipeline_class(self.txt2img.model())

        self.load_in_background(load)
        if self.settings.zero_gpu:
            return
        img = Image.new("RGB", (64, 64), (255, 255, 255))
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (16, 16, 48, 48))
        for method in self.methods_available():
            try:
                self.inpaint({"background": img, "layers": [], "composite": None}, "a red circle", steps=2,
                             method=method, mask=mask)
            except UserInputError:
                pass
            except Exception:  # noqa: BLE001 - runs in a background thread at start-up: log, never crash
                log.exception("inpainting warm-up failed (%s)", method)

    # ---- validation ------------------------------------------------------------------------------
    def check_blur(self, value: Any) -> float:
        return V.check_float(value, "mask blur", 0.0, float(MAX_BLUR))

    def check_dilate(self, value: Any) -> int:
        return V.check_int(value, "mask dilation", 0, MAX_DILATE)

    def check_padding(self, value: Any) -> int:
        return V.check_int(value, "padding", 0, MAX_PADDING)

    def check_method(self, value: Any) -> str:
        return V.check_choice(value, "method", METHODS)

    def _prompt_notices(self, m: LoadedSD, prompt: str, negative: str) -> list[str]:
        t = self.txt2img
        out: list[str] = []
        if not prompt.strip():
            out.append("Empty prompt: the model fills the mask with whatever fits the surroundings (for this "
                       "model usually background).")
        out += t._prompt_notices(m, prompt, "prompt")
        if negative:
            out += t._prompt_notices(m, negative, "negative prompt")
        return out

    def _model_notices(self, method: str, m: LoadedSD) -> list[str]:
        """Which model serves this method when it is not the configured one, in every answer."""
        if method == METHOD_BLEND:
            return [self.txt2img.model_note] if self.txt2img.model_note else []
        out = [n for n in (self.model_note, self.config_note()) if n]
        t = self.txt2img
        if (not m.builtin and t.settings.txt2img_model and not t._hub_failed
                and f"txt2img/hub/{t.settings.txt2img_model}" in self.registry):
            base = t.model()
            if not base.builtin and base.family != m.family:
                out.append(f"The inpainting model {m.model!r} is {_family_name(m.family)} but the text-to-image "
                           f"model {base.model!r} is {_family_name(base.family)}: the two methods use different "
                           "model families.")
        return out

    # ---- inpainting --------------------------------------------------------------------------------
    def inpaint(self, editor: Any, prompt: Any = "", negative_prompt: Any = "", mask_blur: Any = DEFAULT_BLUR,
                padding: Any = 0, strength: Any = 1.0, steps: Any = 25, guidance_scale: Any = 7.5, seed: Any = 0,
                method: Any = METHOD_NINE, scheduler: Any = DEFAULT_SCHEDULER, mask: Any = None,
                dilate: Any = 0) -> dict[str, Any]:
        """Repaint the masked part of ``editor``'s image.

        ``editor``: a Gradio ``ImageMask`` value ``{"background", "layers", "composite"}`` or a plain image;
        ``mask``: an uploaded mask that replaces the painted layers (white = repaint; see
        :func:`mask_from_editor`). ``mask_blur`` 0 … :data:`MAX_BLUR` px (σ of the outward feather),
        ``dilate`` 0 … :data:`MAX_DILATE` px (see :func:`prepare_mask`). ``padding`` 0 … :data:`MAX_PADDING`
        px: 0 processes the whole image; > 0 is "only masked" (diffusers' ``padding_mask_crop``: the
        pipeline crops the mask's bounding box grown by ``padding`` px, to the image's aspect ratio, runs at
        the model's size and pastes the crop back through the feathered mask — so there the feather is
        applied twice, m̃², still exact where m̃ = 0). ``strength`` in (0, 1] (1 = the hole starts from pure
        noise; lower keeps some of what was there, as img2img), ``steps`` 1 … 100, ``guidance_scale``
        1 … 30, ``seed``, ``method`` one of :data:`METHODS`, ``scheduler`` as in text to image.

        Returns ``{"input"`` (the RGB image at the model's size), ``"mask"`` (the feathered mask as used,
        ``L``), ``"masked"`` (the input with the repainted area checkered), ``"result"`` (pasted back, with
        its parameters as a PNG text chunk), ``"raw"`` (the pipeline's output before paste-back),
        ``"notices", "seconds", "model", "method", "changed_pixels", "skipped"}``. An empty mask returns the
        input unchanged without running the model (``skipped`` True). The same arguments give the same pixels."""
        start = time.perf_counter()
        t = self.txt2img
        prompt = t._text(prompt, "prompt")
        negative = t._text(negative_prompt, "negative prompt")
        steps = t.check_steps(steps)
        guidance = t.check_guidance(guidance_scale)
        scheduler = t.check_scheduler(scheduler)
        strength = t.check_strength(strength, steps)
        seed = V.check_seed(seed, self.limits)
        blur = self.check_blur(mask_blur)
        dilate = self.check_dilate(dilate)
        padding = self.check_padding(padding)
        method = self.check_method(method)
        image, raw_mask, notices = mask_from_editor(editor, mask, self.limits)
        m, pipe = self._pipeline(method, scheduler)
        size = m.image_size
        init, notes = t.prepare_image(image, size)
        notices += notes
        fitted = fit_mask(raw_mask, size)
        if np.asarray(raw_mask).any() and not np.asarray(fitted).any():
            notices.append("The painted area lies outside the centre square that was kept: nothing will change.")
        soft = prepare_mask(fitted, blur, dilate)
        mask_l = mask_image(soft)
        notices += self._model_notices(method, m)
        req = GenRequest(prompt, negative, steps, guidance, seed, scheduler, 1)
        params = req.params(m.model, kind="inpaint", seed=seed, strength=strength, method=method,
                            mask_blur=blur, dilate=dilate, padding=padding)
        out: dict[str, Any] = {"input": init, "mask": mask_l, "masked": masked_view(init, soft),
                               "model": m.model, "method": method}
        if not soft.any():
            return {**out, "result": with_params(init, {**params, "unchanged": True}), "raw": init.copy(),
                    "notices": notices, "seconds": time.perf_counter() - start, "changed_pixels": 0,
                    "skipped": True}
        notices += self._prompt_notices(m, prompt, negative)
        if method == METHOD_NINE and int(pipe.unet.config.in_channels) != 9:
            notices.append(f"{m.model} has a {pipe.unet.config.in_channels}-channel U-Net: the pipeline blends "
                           "latents, as the other method does.")
        kwargs = dict(prompt=prompt, negative_prompt=negative or None, image=init, mask_image=mask_l,
                      height=size, width=size, padding_mask_crop=padding or None, strength=strength,
                      num_inference_steps=steps, guidance_scale=guidance, generator=t._generators(seed, 1))
        result: dict[str, Any] = {}
        for kind, info in t._stream(m, pipe, kwargs, None, math.inf):
            if kind == "done":
                result = info
        raw = result["output"].images[0].convert("RGB")
        pasted = paste_back(init, raw, soft)
        return {**out, "result": with_params(pasted, params), "raw": raw, "notices": notices,
                "seconds": time.perf_counter() - start, "changed_pixels": changed_pixels(init, pasted),
                "skipped": False}

