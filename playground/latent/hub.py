"""Real Stable Diffusion models (a Hub id, or a local diffusers folder) for the text-to-image family.

- **Fetching** (:func:`fetch`): the files a diffusers ``from_pretrained(..., use_safetensors=True)`` reads, chosen
  by :func:`core.hub_files.select_files` (the same choice the deploy command preloads at build time), each
  downloaded with ``huggingface_hub.hf_hub_download`` so the tab can say "downloading n of m files"; float16
  variants (``*.fp16.safetensors``) where the repository has them. Files already in the Hub cache (a Space's
  ``preload_from_hub``) are not fetched again. A local folder is read in place.
- **Loading** (:func:`load_pipeline`): ``AutoPipelineFor*.from_pretrained`` in float16 on CUDA (float32
  elsewhere), safetensors only, never remote code; an optional VAE replaces the pipeline's (SDXL's own VAE
  overflows in float16; ``madebyollin/sdxl-vae-fp16-fix`` does not); then placed on the device
  (:func:`place_pipeline`).
- **Family** (:func:`family`): SDXL U-Nets take "added conditions" (``addition_embed_type == "text_time"``:
  the pooled text embedding of the second encoder and six size/crop numbers, Podell et al. 2023, §2.2);
  SD 1.x / 2.x U-Nets do not. Parts of different families cannot be combined (an SD 1.5 ControlNet on an
  SDXL base).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.hub_files import select_files

log = logging.getLogger("playground")

Progress = Callable[[str], None]           # receives a short status text ("downloading 3 of 12 files")


def family(config: Any) -> str:
    """"sdxl" for a U-Net / ControlNet config with SDXL's added conditions, else "sd" (SD 1.x / 2.x)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return "sdxl" if get("addition_embed_type", None) == "text_time" else "sd"


def _components(index: dict[str, Any]) -> list[str]:
    """The component folders named in a ``model_index.json``."""
    return [k for k, v in index.items()
            if not k.startswith("_") and isinstance(v, (list, tuple)) and len(v) == 2 and v[1] is not None]


def fetch(model_id: str, dtype: torch.dtype, progress: Progress | None = None) -> tuple[str, str | None]:
    """Make ``model_id``'s files local; returns (folder, variant to load: "fp16" or None).

    A local folder is used in place; a Hub id is listed (``HfApi.list_repo_files``), and the chosen files are
    downloaded one by one into the Hub cache, reporting "downloading n of m files"."""
    want = "fp16" if dtype == torch.float16 else None
    say = progress or (lambda _text: None)
    path = Path(model_id).expanduser()
    if path.is_dir():
        files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        index = path / "model_index.json"
        comps = _components(json.loads(index.read_text())) if index.exists() else None
        chosen = select_files(files, comps, want)
        folder = str(path)
    else:
        from huggingface_hub import HfApi, hf_hub_download

        files = HfApi().list_repo_files(model_id)
        comps = None
        if "model_index.json" in files:
            comps = _components(json.loads(Path(hf_hub_download(model_id, "model_index.json")).read_text()))
        chosen = select_files(files, comps, want)
        if not chosen:
            raise ValueError(f"{model_id!r} holds no safetensors weights that diffusers can load")
        local = ""
        for i, name in enumerate(chosen):
            say(f"downloading {i + 1} of {len(chosen)} files")
            local = hf_hub_download(model_id, name)
        folder = str(Path(local).parents[len(Path(chosen[-1]).parts) - 1])
    if not any(f.endswith(".safetensors") for f in chosen):
        raise ValueError(f"{model_id!r} holds no safetensors weights that diffusers can load")
    variant = want if want and any(f".{want}." in f or f".{want}-" in f for f in chosen) else None
    say(f"reading {sum(f.endswith('.safetensors') for f in chosen)} weight files into memory")
    return folder, variant


def load_vae(model_id: str, dtype: torch.dtype, progress: Progress | None = None) -> Any:
    """An ``AutoencoderKL`` to replace a pipeline's own (e.g. an fp16-safe SDXL VAE)."""
    from diffusers import AutoencoderKL

    folder, variant = fetch(model_id, dtype, progress)
    return AutoencoderKL.from_pretrained(folder, dtype=dtype, use_safetensors=True, variant=variant)


def model_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``PLAYGROUND_DTYPE``: "auto" is float16 on CUDA and float32 elsewhere."""
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "float32": torch.float32}[setting]


def load_pipeline(auto_cls: type, model_id: str, device: torch.device, vae_id: str = "",
                  progress: Progress | None = None, zero_gpu: bool = False, dtype: str = "auto") -> tuple[Any, bool]:
    """``auto_cls.from_pretrained(model_id)`` (an ``AutoPipelineFor*``) made local by :func:`fetch`, in
    :func:`model_dtype`, with the VAE of ``vae_id`` when given; placed on ``device``. Returns (pipeline,
    offloaded)."""
    dtype = model_dtype(dtype, device)
    folder, variant = fetch(model_id, dtype, progress)
    kwargs: dict[str, Any] = dict(dtype=dtype, use_safetensors=True, variant=variant)
    if vae_id:
        kwargs["vae"] = load_vae(vae_id, dtype, progress)
    pipe = auto_cls.from_pretrained(folder, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe, place_pipeline(pipe, device, zero_gpu)


def place_pipeline(pipe: Any, device: torch.device, zero_gpu: bool = False) -> bool:
    """Put a Hub pipeline on ``device``; on CUDA with little free memory, model CPU offload (< 6 GiB free:
    returns True, runs must then be serialised) or attention slicing (< 12 GiB). On ZeroGPU the main process
    has no GPU to measure (``spaces`` moves the weights into each ``@spaces.GPU`` call): plain ``.to``."""
    if device.type != "cuda" or zero_gpu:
        pipe.to(device)
        return False
    free, _ = torch.cuda.mem_get_info(device)
    if free < 6 * 2**30:
        pipe.enable_model_cpu_offload(device=device)
        return True
    pipe.to(device)
    if free < 12 * 2**30:
        pipe.enable_attention_slicing()
    return False


def vae_needs_upcast(vae: Any) -> bool:
    """Does decoding with this VAE need float32? (float16 weights and ``force_upcast`` in its config, as
    SDXL's own VAE: it overflows to inf / NaN in float16, and the picture comes out black.)"""
    return vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
