"""The committed digit GANs through GANService: seeded, labelled, truncated, compared, walked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.core.errors import UserInputError
from playground.core.images import pil_to_tensor
from playground.gan.service import GAN_MODELS, GANService


@pytest.fixture(scope="module")
def svc() -> GANService:
    return GANService()


def test_all_five_models_are_committed(svc):
    assert svc.available() == list(GAN_MODELS)


@pytest.mark.parametrize("model", list(GAN_MODELS))
def test_same_seed_same_digits_whatever_the_grid_size(svc, model):
    a, _ = svc.sample_tensor(model, 4, 7)
    b, _ = svc.sample_tensor(model, 16, 7)
    c, _ = svc.sample_tensor(model, 4, 8)
    assert a.shape == (4, 1, 28, 28) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.allclose(a, b[:4], atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_cgan_draws_the_requested_digit(svc):
    x, labels = svc.sample_tensor("cgan", 40, 3, label=7)
    assert labels.tolist() == [7] * 40
    assert (svc.classify(x) == 7).mean() >= 0.9


def test_truncation_rescale_and_clip(svc):
    full, _ = svc.sample_tensor("wgan-gp", 8, 5, truncation=1.0)
    small, _ = svc.sample_tensor("wgan-gp", 8, 5, truncation=0.3)
    clipped, _ = svc.sample_tensor("wgan-gp", 8, 5, truncation=0.3, mode="clip")
    wide_clip, _ = svc.sample_tensor("wgan-gp", 8, 5, truncation=2.0, mode="clip")
    assert not torch.allclose(full, small) and not torch.allclose(small, clipped)
    # clipping at 2 sigma touches a few coordinates of z; clipping at 0.3 sigma almost all of them
    assert (full - wide_clip).abs().mean() < 0.5 * (full - clipped).abs().mean()


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "stylegan"}, "model"),
    ({"label": 3}, "unconditional"),
    ({"name": "cgan", "label": 10}, "label"),
    ({"n": 65}, "number of samples"),
    ({"truncation": 0}, "truncation"),
    ({"truncation": -1}, "truncation"),
    ({"mode": "squash"}, "truncation mode"),
    ({"seed": -1}, "seed"),
])
def test_bad_sampling_input_is_refused(svc, kwargs, message):
    args = {"name": "gan", "n": 4, "seed": 0, "label": -1, "truncation": 1.0, "mode": "rescale"} | kwargs
    with pytest.raises(UserInputError, match=message):
        svc.sample_tensor(args["name"], args["n"], args["seed"], args["label"], args["truncation"], args["mode"])


def test_compare_puts_every_model_on_the_same_z(svc):
    res = svc.compare(9, 4)
    assert [r["model"] for r in res] == list(GAN_MODELS)
    for r in res:
        assert sum(r["histogram"]) == 9 and len(r["scores"]) == 9
        assert r["score_kind"] == ("critic" if r["model"].startswith("wgan") else "P(real)")
        if r["score_kind"] == "P(real)":
            assert all(0 <= s <= 1 for s in r["scores"])


def test_interpolation_starts_and_ends_on_the_two_seeds(svc):
    frames = svc.interpolate("dcgan", 11, 12, 6, -1, "slerp")
    a, _ = svc.sample_tensor("dcgan", 1, 11)
    b, _ = svc.sample_tensor("dcgan", 1, 12)
    assert len(frames) == 6
    assert np.abs(pil_to_tensor(frames[0]).numpy() - a[0].numpy()).max() <= 1 / 255 + 1e-6
    assert np.abs(pil_to_tensor(frames[-1]).numpy() - b[0].numpy()).max() <= 1 / 255 + 1e-6
    with pytest.raises(UserInputError, match="steps"):
        svc.interpolate("dcgan", 1, 2, 1000)


def test_training_history_has_losses_per_epoch(svc):
    for model in GAN_MODELS:
        rows = svc.history(model)
        assert rows and {"epoch", "d_loss", "g_loss"} <= set(rows[0])
    assert any(r.get("wasserstein") for r in svc.history("wgan-gp"))
