"""The digit-GAN training loop on the real data for one epoch: seeded and resumable."""
from __future__ import annotations

import os

import torch

from playground.core.settings import REPO_ROOT
from playground.core.training import load_resume
from playground.gan.model import GANConfig, build
from playground.gan.train import preset, recalibrate_batchnorm, train


def _ckpt(tmp_path, name):
    root = tmp_path / "ckpt"
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "classifier").exists():
        os.symlink(REPO_ROOT / "checkpoints" / "classifier", root / "classifier")
    return root / name


def test_one_epoch_is_deterministic_for_a_seed(tmp_path):
    states = []
    for run in ("a", "b"):
        out = _ckpt(tmp_path / run, "gan_cgan")
        rec = train("gan_cgan", preset("gan_cgan", epochs=3, seed=5), out_dir=out, progress=False, stop_after=1)
        assert rec["interrupted_at_epoch"] == 1
        states.append(load_resume(tmp_path / run / "runs" / "gan_cgan" / "last.pt"))
    for k, v in states[0]["g"].items():
        assert torch.equal(v, states[1]["g"][k]), k
    def losses(st):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in st["history"]]

    assert losses(states[0]) == losses(states[1]) and len(losses(states[0])) == 1


def test_batchnorm_recalibration_replaces_the_live_statistics():
    cfg = GANConfig(kind="mlp")
    g, _ = build(cfg)
    bn = g.model[2]
    bn.running_mean.fill_(100.0)
    recalibrate_batchnorm(g, cfg, seed=0, batches=2, bs=64)
    assert not g.training and float(bn.running_mean.abs().max()) < 10 and bn.momentum == 0.1
