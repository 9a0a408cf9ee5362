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

from ..core.hub_files import pipeline_components, select_files

log = logging.getLogger("playground")

Progress = Callable[[str], None]           # receives a short status text ("downloading 3 of 12 files")


def family(config: Any) -> str:
    """"sdxl" for a U-Net / ControlNet config with SDXL's added conditions, else "sd" (SD 1.x / 2.x)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return "sdxl" if get("addition_embed_type", None) == "text_time" else "sd"


def _cached_snapshot(model_id: str, why: Exception) -> Path:
    """The Hub cache's copy of ``model_id`` (e.g. fetched by a Space's ``preload_from_hub``), when the Hub
    cannot be asked; else the original error."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached either: the Hub's own error says more
        raise why from None


def fetch(model_id: str, dtype: torch.dtype, progress: Progress | None = None) -> tuple[str, str | None]:
    """Make ``model_id``'s files local; returns (folder, variant to load: "fp16" or None).

    A local folder is used in place; a Hub id is listed (``HfApi.list_repo_files``), and the chosen files are
    downloaded one by one into the Hub cache, reporting "downloading n of m files"."""
    want = "fp16" if dtype == torch.float16 else None
    say = progress or (lambda _text: None)
    path = Path(model_id).expanduser()
    if not path.is_dir() and model_id.startswith(("/", "./", "../", "~")):     # a path, never a Hub id
        raise FileNotFoundError(f"there is no folder {model_id}")
    if not path.is_dir():
        try:
            from huggingface_hub import HfApi

            files = HfApi().list_repo_files(model_id)
        except Exception as exc:  # noqa: BLE001 - offline (HF_HUB_OFFLINE) or the Hub unreachable: the cache
            path = _cached_snapshot(model_id, exc)
    if path.is_dir():
        files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        index = path / "model_index.json"
        comps = pipeline_components(json.loads(index.read_text())) if index.exists() else None
        chosen = select_files(files, comps, want)
        folder = str(path)
    else:
        from huggingface_hub import hf_hub_download

        comps = None
        if "model_index.json" in files:
            index_file = Path(hf_hub_download(model_id, "model_index.json"))
            comps = pipeline_components(json.loads(index_file.read_text()))
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


def vae_mismatch(vae: Any, folder: str) -> str:
    """Why the VAE ``vae`` cannot replace the one of the pipeline in ``folder`` ("" if it can): another latent
    space (channels or scaling factor: an SDXL VAE in an SD 1.5 pipeline decodes garbage)."""
    own = Path(folder) / "vae" / "config.json"
    if not own.exists():
        return ""
    cfg = json.loads(own.read_text())
    theirs = (int(cfg.get("latent_channels", 4)), round(float(cfg.get("scaling_factor", 0.18215)), 5))
    ours = (int(vae.config.latent_channels), round(float(vae.config.scaling_factor), 5))
    if ours == theirs:
        return ""
    return (f"latent channels / scaling factor {ours[0]} / {ours[1]:g} vs the pipeline's own VAE's "
            f"{theirs[0]} / {theirs[1]:g}")


def load_pipeline(auto_cls: type, model_id: str, device: torch.device, vae_id: str = "",
                  progress: Progress | None = None, zero_gpu: bool = False, dtype: str = "auto"
                  ) -> tuple[Any, bool, list[str]]:
    """``auto_cls.from_pretrained(model_id)`` (an ``AutoPipelineFor*``) made local by :func:`fetch`, in
    :func:`model_dtype`, with the VAE of ``vae_id`` when given and it fits (:func:`vae_mismatch`; else the
    pipeline's own, with a note); placed on ``device``. Returns (pipeline, offloaded, notes)."""
    dtype = model_dtype(dtype, device)
    folder, variant = fetch(model_id, dtype, progress)
    kwargs: dict[str, Any] = dict(dtype=dtype, use_safetensors=True, variant=variant)
    notes: list[str] = []
    if vae_id:
        vae = load_vae(vae_id, dtype, progress)
        why = vae_mismatch(vae, folder)
        if why:
            notes.append(f"The configured VAE {vae_id!r} does not fit {model_id!r} ({why}): its own VAE serves.")
        else:
            kwargs["vae"] = vae
    pipe = auto_cls.from_pretrained(folder, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe, place_pipeline(pipe, device, zero_gpu), notes


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
