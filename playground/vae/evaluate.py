"""Held-out negative ELBO (nats per digit), estimated with several posterior samples."""
from __future__ import annotations

import torch

from ..core.seeding import make_generator
from .model import Autoencoder


@torch.no_grad()
def neg_elbo(model: Autoencoder, x: torch.Tensor, samples: int = 10, seed: int = 0,
             batch_size: int = 500) -> dict[str, float]:
    """Mean of recon + KL over ``x``: E_q[-log p(x|z)] by ``samples`` draws of z ~ q(z|x) per image
    (the KL is exact). For an AE the "KL" is 0 and recon uses its deterministic code."""
    g = make_generator(seed)
    rec = kl = 0.0
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        r = k = 0.0
        for _ in range(samples):
            eps = torch.randn((len(xb), model.latent_dim), generator=g)
            t = model.terms(xb, eps)
            r += float(t.recon.sum()) / samples
            k += float(t.kl.sum()) / samples
        rec += r
        kl += k
    model.train(was_training)
    n = len(x)
    return {"neg_elbo": (rec + kl) / n, "recon": rec / n, "kl": kl / n}
