"""Training is deterministic for a seed and resumes exactly (tiny configuration, a few seconds)."""
from __future__ import annotations

import torch

from playground.core.checkpoint import load_weights, read_history, read_json
from playground.vae.model import VAEConfig
from playground.vae.train import TrainConfig, train


def _cfg() -> TrainConfig:
    return TrainConfig(VAEConfig(kind="vae", latent_dim=2, hidden=[16]), epochs=3, batch_size=512,
                       warmup_epochs=1, patience=10, ema=0.9, seed=3)


def _weights(folder):
    return load_weights(folder)


def test_same_seed_same_weights_and_outputs(tmp_path):
    a = train("t", _cfg(), out_dir=tmp_path / "a" / "t", runs_dir=tmp_path / "ra", progress=False)
    b = train("t", _cfg(), out_dir=tmp_path / "b" / "t", runs_dir=tmp_path / "rb", progress=False)
    wa, wb = _weights(tmp_path / "a" / "t"), _weights(tmp_path / "b" / "t")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["best_val_neg_elbo"] == b["best_val_neg_elbo"]
    hist = read_history(tmp_path / "a" / "t" / "history.csv")
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert read_json(tmp_path / "a" / "t" / "config.json")["model"]["latent_dim"] == 2


def test_resume_continues_exactly(tmp_path):
    train("t", _cfg(), out_dir=tmp_path / "full" / "t", runs_dir=tmp_path / "rf", progress=False)
    part = train("t", _cfg(), out_dir=tmp_path / "res" / "t", runs_dir=tmp_path / "rr", progress=False,
                 stop_after=2)
    assert part["interrupted_at_epoch"] == 2
    train("t", _cfg(), out_dir=tmp_path / "res" / "t", runs_dir=tmp_path / "rr", progress=False)
    wf, wr = _weights(tmp_path / "full" / "t"), _weights(tmp_path / "res" / "t")
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
