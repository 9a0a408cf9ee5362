"""One settings object, read once from environment variables.

No other module reads ``os.environ``: they take a :class:`Settings` (usually :func:`get_settings`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .presets import get_preset

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:  # configuration errors are the operator's, so fail loudly at start
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class Limits:
    """Per-request limits that keep one visitor from starving the others."""

    max_samples: int = 64          # images per request (grids, galleries)
    max_interp_steps: int = 24     # frames in an interpolation strip
    max_image_side: int = 4096     # uploads larger than this are refused, smaller ones resized
    max_upload_pixels: int = 4096 * 4096
    max_seed: int = 2**32 - 1
    max_abs_latent: float = 6.0    # slider range is +-4; the API accepts a little more


@dataclass(frozen=True)
class Settings:
    """Everything configurable, from ``PLAYGROUND_*`` variables (empty = built-in default)."""

    device: str = "auto"                      # PLAYGROUND_DEVICE: auto | cpu | cuda | mps
    checkpoints_dir: Path = REPO_ROOT / "checkpoints"  # PLAYGROUND_CHECKPOINTS
    host: str = "127.0.0.1"                  # PLAYGROUND_HOST (0.0.0.0 on Spaces/containers)
    port: int = 7860                          # PLAYGROUND_PORT (GRADIO_SERVER_PORT also honoured)
    torch_threads: int = 0                    # PLAYGROUND_TORCH_THREADS (0 = torch default)
    concurrency: int = 4                      # PLAYGROUND_CONCURRENCY: queue workers per event
    live_workers: int = 4                     # PLAYGROUND_LIVE_WORKERS: live 2-D GAN runs playing at once
    preset: str = ""                          # PLAYGROUND_PRESET: sd15 | sd21 | sdxl (core/presets.py)
    txt2img_model: str = ""                   # PLAYGROUND_TXT2IMG_MODEL (Hub id or folder, GPU hosts)
    inpaint_model: str = ""                   # PLAYGROUND_INPAINT_MODEL
    controlnet_model: str = ""                # PLAYGROUND_CONTROLNET_MODEL
    vae_model: str = ""                       # PLAYGROUND_VAE_MODEL: replaces the pipelines' VAE (fp16-safe)
    dtype: str = "auto"                       # PLAYGROUND_DTYPE of configured models: auto (fp16 on CUDA),
                                              # float16 or float32
    zero_gpu: bool = False                    # SPACES_ZERO_GPU (set by Hugging Face on ZeroGPU hardware)
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        ckpt = env.get("PLAYGROUND_CHECKPOINTS", "").strip()
        port = env.get("PLAYGROUND_PORT", "").strip() or env.get("GRADIO_SERVER_PORT", "").strip()
        host = env.get("PLAYGROUND_HOST", "").strip() or env.get("GRADIO_SERVER_NAME", "").strip()
        device = env.get("PLAYGROUND_DEVICE", "").strip().lower() or "auto"
        if device not in {"auto", "cpu", "cuda", "mps"}:
            raise ValueError(f"PLAYGROUND_DEVICE must be one of auto, cpu, cuda, mps; got {device!r}")
        preset = get_preset(env.get("PLAYGROUND_PRESET", ""))

        def model(name: str, default: str) -> str:       # a variable overrides the preset's entry
            return env.get(name, "").strip() or default

        dtype = env.get("PLAYGROUND_DTYPE", "").strip().lower() or "auto"
        if dtype not in {"auto", "float16", "float32"}:
            raise ValueError(f"PLAYGROUND_DTYPE must be one of auto, float16, float32; got {dtype!r}")
        return cls(
            device=device,
            dtype=dtype,
            checkpoints_dir=Path(ckpt) if ckpt else REPO_ROOT / "checkpoints",
            host=host or "127.0.0.1",
            port=int(port) if port else 7860,
            torch_threads=_env_int(env, "PLAYGROUND_TORCH_THREADS", 0),
            concurrency=max(1, _env_int(env, "PLAYGROUND_CONCURRENCY", 4)),
            live_workers=max(1, _env_int(env, "PLAYGROUND_LIVE_WORKERS", 4)),
            preset=preset.family if preset else "",
            txt2img_model=model("PLAYGROUND_TXT2IMG_MODEL", preset.txt2img if preset else ""),
            inpaint_model=model("PLAYGROUND_INPAINT_MODEL", preset.inpaint if preset else ""),
            controlnet_model=model("PLAYGROUND_CONTROLNET_MODEL", preset.controlnet if preset else ""),
            vae_model=model("PLAYGROUND_VAE_MODEL", preset.vae if preset else ""),
            zero_gpu=env.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true"),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings.from_env()
