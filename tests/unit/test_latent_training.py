"""``python -m playground train tiny_sd`` in miniature: both stages, the shipped folder, exact resumption."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch
from safetensors.torch import load_file

from playground.latent.components import load_pipeline
from playground.latent.train import drop_captions, lr_factor, preset, step_generator, train

torch.set_num_threads(1)


def _run(root: Path, **kw) -> dict:
    return train("tiny_sd", preset("test"), out_dir=root / "checkpoints" / "tiny_sd", runs_dir=root / "runs" / "tiny_sd",
                 progress=False, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*/*.safetensors")):
        out.update({f"{f.parent.name}/{k}": v for k, v in load_file(str(f)).items()})
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny_sd")
    return root, _run(root)


def test_training_writes_a_loadable_pipeline_and_its_record(trained: tuple[Path, dict]) -> None:
    root, record = trained
    folder = root / "checkpoints" / "tiny_sd"
    cfg = preset("test")
    assert record["vae_steps"] == cfg.vae_steps and record["unet_steps"] == cfg.unet_steps
    assert record["vae_val_psnr_db"] > 0 and record["vae_val_mse"] > 0 and record["scaling_factor"] > 0
    assert json.loads((folder / "training.json").read_text())["unet_steps"] == cfg.unet_steps
    history = (folder / "history.csv").read_text().splitlines()
    assert history[0].startswith("stage,step,loss") and len(history) == 1 + cfg.vae_steps + cfg.unet_steps
    card = (folder / "README.md").read_text()
    assert "python -m playground train tiny_sd" in card and "unet/diffusion_pytorch_model.safetensors" in card
    pipe = load_pipeline(folder)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    image = pipe("a large red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images
    assert image.shape == (1, 64, 64, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert {"vae.pt", "unet.pt", "latents.pt"} <= {p.name for p in (root / "runs" / "tiny_sd").iterdir()}


def test_interrupted_training_resumes_to_identical_weights(trained: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = trained
    first = _run(tmp_path, stop_after=2)                       # inside stage 1
    assert first["interrupted_at"]["stage"] == 1
    second = _run(tmp_path, stop_after=2)                      # finishes stage 1, then one U-Net step
    assert second["interrupted_at"]["stage"] == 2
    _run(tmp_path)
    straight, resumed = _weights(root / "checkpoints" / "tiny_sd"), _weights(tmp_path / "checkpoints" / "tiny_sd")
    assert straight.keys() == resumed.keys() and len(straight) > 50
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_no_resume_starts_over(trained: tuple[Path, dict], tmp_path: Path) -> None:
    _run(tmp_path, stop_after=2)
    record = _run(tmp_path, resume=False)
    root, reference = trained
    assert record["final_loss"] == reference["final_loss"]     # same seed, from scratch: the same run


def test_helpers() -> None:
    assert torch.equal(torch.randn(3, generator=step_generator(0, 2, 7)), torch.randn(3, generator=step_generator(0, 2, 7)))
    assert not torch.equal(torch.randn(3, generator=step_generator(0, 2, 7)),
                           torch.randn(3, generator=step_generator(0, 2, 8)))
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1) and lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    ids, empty = torch.ones(2000, 77, dtype=torch.int32), torch.zeros(77, dtype=torch.int32)
    dropped = drop_captions(ids, empty, 0.1, torch.Generator().manual_seed(0))
    rows = (dropped == 0).all(1)
    assert 0.07 < rows.float().mean() < 0.13 and bool(((dropped == 1).all(1) | rows).all())
