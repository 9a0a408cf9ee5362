"""VAE objective (Kingma & Welling 2013, arXiv:1312.6114).

ELBO (their eq. 3):  log p(x) >= E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z)).
With a Bernoulli decoder, -E_q[log p(x|z)] is the summed binary cross-entropy, and with
q = N(mu, diag sigma^2), p = N(0, I) the KL has the closed form of their Appendix B:
    KL = -1/2 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
beta-VAE (Higgins et al. 2017) weights the KL term by beta.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dims (Appendix B)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (paper §2.4): the noise is an input, so gradients reach mu, sigma."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def bce_sum(x_recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) for a Bernoulli decoder with continuous targets in [0, 1], summed per sample (nats)."""
    return F.binary_cross_entropy(x_recon.flatten(1), x.flatten(1), reduction="none").sum(dim=1)


def bce_sum_logits(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Same as :func:`bce_sum` from logits (numerically safer for training)."""
    return F.binary_cross_entropy_with_logits(logits.flatten(1), x.flatten(1), reduction="none").sum(dim=1)


@dataclass
class ElboTerms:
    """Per-sample terms, in nats: ``loss = recon + beta * kl``; the negative ELBO is ``recon + kl``."""

    recon: torch.Tensor
    kl: torch.Tensor

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        return (self.recon + beta * self.kl).mean()

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl
