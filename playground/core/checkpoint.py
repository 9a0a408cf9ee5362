"""Checkpoint folders: ``model.safetensors`` + ``config.json`` (+ ``history.csv``, ``metrics.json``,
``training.json`` and the ``README.md`` model card). Weights are never pickled."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MAX_FILE_BYTES = 10 * 1024 * 1024  # Hugging Face Spaces needs LFS above this


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def save_weights(folder: Path, state: dict[str, torch.Tensor], filename: str = "model.safetensors") -> Path:
    """Save a state dict as safetensors (contiguous CPU copies), refusing files over 10 MB."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    path = folder / filename
    tmp = folder / f".{filename}.tmp"
    save_file(tensors, str(tmp))
    size = tmp.stat().st_size
    if size > MAX_FILE_BYTES:
        tmp.unlink()
        raise ValueError(f"{path} would be {size / 2**20:.1f} MB; checkpoint files must stay <= 10 MB")
    os.replace(tmp, path)
    return path


def load_weights(folder: Path, filename: str = "model.safetensors", device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(folder / filename), device=str(device))


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """The loss history that the tabs plot (one row per epoch or logged step). The columns are the union of
    the rows' keys, in order of appearance; a row without a column leaves its cell empty."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
