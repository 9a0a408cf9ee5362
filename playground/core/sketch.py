"""Turn a hand-drawn (or uploaded) image into an MNIST-style 28x28 digit.

MNIST's recipe (LeCun et al. 1998): the digit's bounding box is scaled to fit 20x20 (keeping the
aspect ratio) and placed in a 28x28 field so that its centre of mass is at the centre.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import UserInputError


def to_mnist_digit(img: Image.Image) -> np.ndarray:
    """Any image -> float32 (28, 28) in [0, 1], white ink on black; raises on a blank drawing."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba, dtype=np.float32)[..., 3] / 255.0
        lum = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
        # a transparent sketchpad: ink is wherever alpha is; on an opaque image use luminance
        if alpha.min() < 0.99:
            drawn = lum[alpha > 0.5]
            dark_ink = drawn.size == 0 or float(drawn.mean()) < 0.5
            return _centre(alpha * (1.0 - lum) if dark_ink else alpha * lum)
        gray = lum
    else:
        gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    # MNIST is white on black: if the picture is mostly light, the ink is the dark part
    ink = 1.0 - gray if np.median(gray) > 0.5 else gray
    return _centre(ink)


def _centre(ink: np.ndarray) -> np.ndarray:
    ink = np.clip(ink, 0.0, 1.0)
    mask = ink > 0.15
    if mask.sum() < 4 or ink.max() - ink.min() < 0.15:
        raise UserInputError("The drawing is blank: draw a digit (or upload one) first.")
    if mask.mean() > 0.85:
        raise UserInputError("The drawing is filled almost everywhere: draw a digit with a thin stroke.")
    rows, cols = np.where(mask)
    crop = ink[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS),
                       dtype=np.float32) / 255.0
    field = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    cy = (small.sum(1) * np.arange(nh)).sum() / total
    cx = (small.sum(0) * np.arange(nw)).sum() / total
    top = int(round(14 - cy))
    left = int(round(14 - cx))
    top = min(max(top, 0), 28 - nh)
    left = min(max(left, 0), 28 - nw)
    field[top: top + nh, left: left + nw] = small
    return np.clip(field, 0.0, 1.0)
