"""Input validation with limits. The only place that raises :class:`UserInputError`."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserInputError
from .settings import Limits

__all__ = [
    "UserInputError",
    "check_choice",
    "check_float",
    "check_int",
    "check_seed",
    "check_vector",
    "check_image",
]


def _as_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise UserInputError(f"{name} must be a number, got {value!r}.")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UserInputError(f"{name} must be a number, got {value!r}.") from None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{name} must be a number, got {type(value).__name__}.") from None
    if not math.isfinite(x):
        raise UserInputError(f"{name} must be a finite number, got {x}.")
    return x


def check_float(value: Any, name: str, lo: float, hi: float) -> float:
    """A finite float within ``[lo, hi]``."""
    x = _as_number(value, name)
    if not lo <= x <= hi:
        raise UserInputError(f"{name} must be between {lo:g} and {hi:g}, got {x:g}.")
    return x


def check_int(value: Any, name: str, lo: int, hi: int) -> int:
    """A whole number within ``[lo, hi]`` (2.0 is accepted as 2; 2.5 is not)."""
    x = _as_number(value, name)
    if x != int(x):
        raise UserInputError(f"{name} must be a whole number, got {x:g}.")
    if not lo <= x <= hi:
        raise UserInputError(f"{name} must be between {lo} and {hi}, got {int(x)}.")
    return int(x)


def check_seed(value: Any, limits: Limits) -> int:
    return check_int(value, "seed", 0, limits.max_seed)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UserInputError(f"Unknown {name} {value!r}; choose one of: {', '.join(choices)}.")
    return value


def check_vector(value: Any, name: str, length: int, bound: float) -> np.ndarray:
    """A list of ``length`` finite floats, each within ``[-bound, bound]``.

    Accepts a list/tuple/array, or a string such as ``"[0.1, -2]"`` or ``"0.1, -2"``.
    """
    if isinstance(value, str):
        text = value.strip().strip("[]")
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
        value = parts
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise UserInputError(f"{name} must be a list of {length} numbers, got {type(value).__name__}.")
    if len(value) != length:
        raise UserInputError(f"{name} must have exactly {length} numbers for this model, got {len(value)}.")
    out = np.array([_as_number(v, f"{name}[{i}]") for i, v in enumerate(value)], dtype=np.float32)
    worst = int(np.argmax(np.abs(out))) if length else 0
    if length and abs(out[worst]) > bound:
        raise UserInputError(
            f"{name}[{worst}] = {out[worst]:g} is outside the latent range [-{bound:g}, {bound:g}]."
        )
    return out


def check_image(value: Any, limits: Limits, name: str = "image") -> Image.Image:
    """Anything Gradio may hand us (PIL image, numpy array, file path, bytes) as a loaded PIL image.

    Refuses missing input, files that are not images, truncated files and images above the size
    limit, each with a message that says what to do.
    """
    if value is None:
        raise UserInputError(f"Please provide an {name} first.")
    if isinstance(value, dict):  # Gradio ImageEditor / Sketchpad value
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
        if value is None:
            raise UserInputError(f"Please draw or upload an {name} first.")
    if isinstance(value, Image.Image):
        img = value
    elif isinstance(value, np.ndarray):
        arr = value
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise UserInputError(f"The {name} must be a 2-D (grey) or 3-D (colour) array, got shape {arr.shape}.")
        if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
            raise UserInputError(f"The {name} must have 1, 3 or 4 channels, got {arr.shape[2]}.")
        _check_side(arr.shape[1], arr.shape[0], limits, name)
        if arr.dtype != np.uint8:
            arr = np.asarray(arr, dtype=np.float64)
            if not np.isfinite(arr).all():
                raise UserInputError(f"The {name} contains NaN or infinite values.")
            if arr.max(initial=0) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        img = Image.fromarray(arr)
    elif isinstance(value, (str, bytes, bytearray)) or hasattr(value, "read"):
        src: Any = io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value
        try:
            img = Image.open(src)
            _check_side(img.width, img.height, limits, name)
            img.load()
        except UserInputError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UserInputError(
                f"That file is not an image we can read ({type(exc).__name__}); upload a PNG, JPEG or WebP."
            ) from None
    else:
        raise UserInputError(f"The {name} must be an image, got {type(value).__name__}.")
    _check_side(img.width, img.height, limits, name)
    return img


def _check_side(width: int, height: int, limits: Limits, name: str) -> None:
    if width < 1 or height < 1:
        raise UserInputError(f"The {name} is empty ({width}x{height}).")
    if max(width, height) > limits.max_image_side or width * height > limits.max_upload_pixels:
        raise UserInputError(
            f"The {name} is {width}x{height} pixels; the limit is {limits.max_image_side} px per side. "
            "Please upload a smaller image."
        )
