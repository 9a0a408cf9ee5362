"""Image <-> tensor conversion, grids and strips, and PNGs that carry their parameters.

Tensors are ``(N, C, H, W)`` or ``(C, H, W)`` floats in ``[0, 1]``; images are PIL.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, PngImagePlugin

PARAMS_KEY = "playground"
# RGB -> (Y, Cb, Cr), ITU-R BT.601 (full range, as JPEG): luma and the two chroma axes, one matrix for the
# scene checker's colour contrast and the decoder's hue loss
YCBCR_BT601: tuple[tuple[float, float, float], ...] = ((0.299, 0.587, 0.114),
                                                       (-0.168736, -0.331264, 0.5),
                                                       (0.5, -0.418688, -0.081312))


def to_pil(x: torch.Tensor | np.ndarray) -> Image.Image:
    """One image tensor ``(C, H, W)`` / ``(H, W)`` in [0, 1] -> PIL (L or RGB)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def to_pils(batch: torch.Tensor) -> list[Image.Image]:
    return [to_pil(x) for x in batch]


def pil_to_tensor(img: Image.Image, mode: str = "L") -> torch.Tensor:
    """PIL -> ``(C, H, W)`` float tensor in [0, 1], converted to ``mode`` first."""
    arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def make_grid(batch: torch.Tensor, nrow: int | None = None, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` into one ``(C, H', W')`` image, ``nrow`` images per row."""
    n, c, h, w = batch.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    out = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=batch.dtype)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = batch[i]
    return out


def upscale(img: Image.Image, factor: int) -> Image.Image:
    """Nearest-neighbour upscaling: pixels stay crisp squares (what a learner should see)."""
    return img.resize((img.width * factor, img.height * factor), Image.NEAREST)


def with_params(img: Image.Image, params: dict[str, Any], unique: bool = True) -> Image.Image:
    """Attach generation parameters (a PNG text chunk) to ``img``.

    With ``unique`` a request id is added, so two identical pictures still differ as files: Gradio
    caches outputs under a hash of their bytes, and concurrent identical files were seen delivered
    truncated (design §6). The pixels are untouched.
    """
    payload = dict(params)
    if unique:
        payload["request_id"] = uuid.uuid4().hex
    img = img.copy()
    img.info[PARAMS_KEY] = json.dumps(payload, sort_keys=True, default=str)
    return img


def png_info(img: Image.Image) -> PngImagePlugin.PngInfo:
    """The ``pnginfo`` to pass to ``img.save(..., pnginfo=...)`` so the text chunk is written."""
    info = PngImagePlugin.PngInfo()
    for key, value in img.info.items():
        if isinstance(value, str):
            info.add_text(key, value)
    return info


def read_params(img: Image.Image) -> dict[str, Any] | None:
    raw = getattr(img, "text", {}).get(PARAMS_KEY) if hasattr(img, "text") else img.info.get(PARAMS_KEY)
    if raw is None:
        raw = img.info.get(PARAMS_KEY)
    if raw is None:
        return None
    try:
        out = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def hstack(images: Sequence[Image.Image], pad: int = 2, bg: int | tuple[int, int, int] = 255) -> Image.Image:
    """Images side by side (a strip), on a background of ``bg``."""
    mode = "RGB" if any(im.mode == "RGB" for im in images) else "L"
    ims = [im.convert(mode) for im in images]
    h = max(im.height for im in ims)
    w = sum(im.width for im in ims) + pad * (len(ims) + 1)
    out = Image.new(mode, (w, h + 2 * pad), bg if mode == "L" or isinstance(bg, tuple) else (bg,) * 3)
    x = pad
    for im in ims:
        out.paste(im, (x, pad))
        x += im.width + pad
    return out


def for_display(img: Image.Image, scale: int = 1, **params: Any) -> Image.Image:
    """Prepare a result for display: crisp nearest-neighbour upscaling and a PNG text chunk with the
    request's parameters and a request id (each delivered file unique; see design §6)."""
    if scale > 1:
        img = upscale(img, scale)
    return with_params(img, params)


def animated_gif(frames: Sequence[Image.Image], path: str | Path, scale: int = 4, ms_per_frame: int = 120,
                 bounce: bool = True) -> Path:
    """Write frames as a looping GIF (upscaled with nearest neighbour; played forth and back when
    ``bounce``) and return its path."""
    big = [upscale(f.convert("L"), scale) for f in frames]
    seq = big + big[-2:0:-1] if bounce and len(big) > 2 else big
    path = Path(path)
    seq[0].save(path, save_all=True, append_images=seq[1:], duration=ms_per_frame, loop=0, optimize=False)
    return path
