"""The VAE's math: KL closed form, reparameterisation gradients, ELBO terms, shapes."""
from __future__ import annotations

import math

import torch

from playground.vae.losses import bce_sum, bce_sum_logits, gaussian_kl, reparameterize
from playground.vae.model import VAEConfig, build_model


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g)
    logvar = torch.randn(3, 4, generator=g) * 0.5
    n = 200_000
    eps = torch.randn(n, 3, 4, generator=g)
    z = mu + torch.exp(0.5 * logvar) * eps
    # log q(z) - log p(z), summed over dims, averaged over samples
    log_q = -0.5 * (eps**2 + logvar + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    mc = (log_q - log_p).sum(-1).mean(0)
    closed = gaussian_kl(mu, logvar)
    assert torch.allclose(mc, closed, atol=0.03, rtol=0.01), (mc, closed)


def test_kl_is_zero_only_at_the_prior():
    assert float(gaussian_kl(torch.zeros(1, 5), torch.zeros(1, 5))) == 0.0
    assert float(gaussian_kl(torch.full((1, 5), 0.3), torch.zeros(1, 5))) > 0.0


def test_reparameterisation_passes_gradients_to_mu_and_sigma():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    logvar = torch.tensor([0.2, -0.4], requires_grad=True)
    eps = torch.tensor([1.5, -0.5])
    z = reparameterize(mu, logvar, eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(2))
    # dz/dlogvar = 0.5 * exp(0.5 logvar) * eps
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_bce_from_logits_equals_bce_from_probabilities():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 28, 28, generator=g)
    x = torch.rand(4, 1, 28, 28, generator=g)
    assert torch.allclose(bce_sum_logits(logits, x), bce_sum(torch.sigmoid(logits), x), rtol=1e-4)


def test_shapes_of_every_model():
    cases = [VAEConfig(kind="ae", latent_dim=20, hidden=[64, 32]), VAEConfig(kind="vae", latent_dim=2, hidden=[64]),
             VAEConfig(kind="convvae", latent_dim=16, image_channels=3, image_size=32)]
    for cfg in cases:
        net = build_model(cfg)
        x = torch.rand(5, cfg.image_channels, cfg.image_size, cfg.image_size)
        mu, logvar = net.encode(x)
        assert mu.shape == (5, cfg.latent_dim)
        assert (logvar is None) == (cfg.kind == "ae")
        out = net.decode(mu)
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        t = net.terms(x)
        assert t.recon.shape == (5,) and t.kl.shape == (5,)
        t.loss(1.0).backward()


def test_beta_weights_only_the_kl():
    from playground.vae.losses import ElboTerms

    t = ElboTerms(recon=torch.tensor([10.0]), kl=torch.tensor([2.0]))
    assert float(t.loss(1.0)) == 12.0 and float(t.loss(4.0)) == 18.0 and float(t.neg_elbo[0]) == 12.0
