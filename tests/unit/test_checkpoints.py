"""The committed checkpoints: safetensors only, each file <= 10 MB, each with config and model card."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from playground.core.checkpoint import MAX_FILE_BYTES, save_weights

ROOT = Path(__file__).resolve().parents[2] / "checkpoints"
EXPECTED = ["classifier", "ae", "vae2", "vae20", "bvae20", "convvae"]


@pytest.mark.parametrize("name", EXPECTED)
def test_checkpoint_folder_is_complete(name):
    folder = ROOT / name
    assert (folder / "model.safetensors").exists(), f"train it: python -m playground train {name}"
    for f in folder.iterdir():
        assert f.suffix in {".safetensors", ".json", ".csv", ".md", ".png"}, f
        assert f.stat().st_size <= MAX_FILE_BYTES, f
    card = (folder / "README.md").read_text()
    assert f"python -m playground train {name}" in card and "Measured figures" in card
    assert (folder / "metrics.json").exists() and (folder / "training.json").exists()


def test_save_weights_refuses_files_over_10_mb(tmp_path):
    with pytest.raises(ValueError, match="10 MB"):
        save_weights(tmp_path, {"w": torch.zeros(3 * 1024 * 1024)})
    assert not (tmp_path / "model.safetensors").exists()



# diffusers folders (a pipeline, or a ControlNet model): every file, at any depth, within the limits
PIPELINES = {"tiny_sd": "python -m playground train tiny_sd",
             "tiny_sd_inpaint": "python -m playground train tiny_sd_inpaint",
             "tiny_sd_controlnet": "python -m playground train tiny_sd_controlnet"}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_folder_is_complete(name):
    folder = ROOT / name
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert any(f.suffix == ".safetensors" for f in files), f"train it: {PIPELINES[name]}"
    for f in files:
        assert f.suffix in {".safetensors", ".json", ".csv", ".md", ".txt", ".png"}, f     # no pickles
        assert f.stat().st_size <= MAX_FILE_BYTES, f
    card = (folder / "README.md").read_text()
    assert PIPELINES[name] in card and "Measured figures" in card
    assert (folder / "metrics.json").exists() and (folder / "training.json").exists()
