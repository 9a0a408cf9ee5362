"""Every digit GAN maps noise (and a label) to 28x28 digits in [-1, 1] and scores them."""
from __future__ import annotations

import torch

from playground.gan.model import KINDS, GANConfig, build


def test_every_gan_produces_digits_and_scores():
    for kind in KINDS:
        cfg = GANConfig(kind=kind)
        gen, disc = build(cfg)
        gen.eval(), disc.eval()
        z = torch.randn(3, cfg.noise_dim)
        labels = torch.tensor([0, 5, 9]) if cfg.conditional else None
        x = gen(z, labels) if labels is not None else gen(z)
        assert x.shape == (3, 1, 28, 28) and float(x.abs().max()) <= 1
        s = disc(x, labels) if labels is not None else disc(x)
        assert s.shape == (3, 1)
