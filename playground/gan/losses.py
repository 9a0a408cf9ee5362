"""GAN objectives, computed from raw discriminator outputs (logits / critic values).

- Minimax game (Goodfellow et al. 2014, eq. 1):
  min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))],  D = sigmoid(logit).
  The discriminator minimises the binary cross-entropy with real = 1, fake = 0.
- Non-saturating generator loss (same paper, §3): G maximises log D(G(z)) instead of minimising
  log(1 - D(G(z))), i.e. minimises BCE(D(G(z)), 1) — strong gradients early on, when D wins easily.
- Wasserstein GAN (Arjovsky et al. 2017, eq. 3): the critic f (no sigmoid, 1-Lipschitz) maximises
  E_x[f(x)] - E_z[f(G(z))], an estimate of the Wasserstein-1 distance; G minimises -E_z[f(G(z))].
- Gradient penalty (Gulrajani et al. 2017, eq. 3 / Algorithm 1): instead of clipping weights,
  add lambda * E_x̂[(||grad f(x̂)||_2 - 1)^2] on random interpolates x̂ = eps x + (1 - eps) G(z).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_losses(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss, non-saturating generator loss) from logits, numerically stable."""
    d_loss = (F.binary_cross_entropy_with_logits(d_real_logits, torch.ones_like(d_real_logits))
              + F.binary_cross_entropy_with_logits(d_fake_logits, torch.zeros_like(d_fake_logits)))
    g_loss = F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))
    return d_loss, g_loss


def wgan_losses(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic loss = -(E f(x) - E f(G(z))), generator loss = -E f(G(z)))."""
    return d_fake.mean() - d_real.mean(), -d_fake.mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator,
                     *extra) -> torch.Tensor:
    """E[(||grad_x̂ critic(x̂)||_2 - 1)^2] on interpolates (lambda not included). ``extra`` are passed
    to the critic after x̂ (e.g. class labels)."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator).to(real.device)
    xhat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(xhat, *extra)
    (grad,) = torch.autograd.grad(out.sum(), xhat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
