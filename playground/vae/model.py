"""The seed's autoencoder, MLP VAE and convolutional VAE (sections 2.1, 3.4, 3.5).

Shapes in end-of-line comments; B = batch, D = latent size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import ElboTerms, bce_sum_logits, gaussian_kl, reparameterize


@dataclass
class VAEConfig:
    """A named model configuration (``kind`` in {ae, vae, convvae})."""

    kind: str = "vae"
    latent_dim: int = 20
    hidden: list[int] = field(default_factory=lambda: [400])
    beta: float = 1.0
    image_channels: int = 1
    image_size: int = 28

    def __post_init__(self) -> None:
        assert self.kind in {"ae", "vae", "convvae"}, f"kind must be ae, vae or convvae, got {self.kind}"
        assert self.latent_dim >= 1 and self.beta > 0

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp(sizes: list[int], final_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Seed §2.1: a deterministic encoder/decoder. Its code z = encoder(x) has no prior, which is
    why decoding z ~ N(0, I) gives nonsense (§2.2). The encoder ends in ReLU as in the seed."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.image_channels * cfg.image_size**2
        self.encoder = _mlp([n, *cfg.hidden, cfg.latent_dim], final_act=True)            # (B, n) -> (B, D)
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), n], final_act=False)  # logits (B, n)

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.encoder(x.flatten(1)), None                                         # (B, D), no variance

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.cfg.image_channels, self.cfg.image_size
        return self.decoder(z).view(-1, c, s, s)                                         # (B, C, H, W)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))                                      # in [0, 1]

    def terms(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> ElboTerms:
        z, _ = self.encode(x)
        recon = bce_sum_logits(self.decode_logits(z), x)
        return ElboTerms(recon=recon, kl=torch.zeros_like(recon))


class VAE(Autoencoder):
    """Seed §3.4: the encoder outputs (mu, log sigma^2); z = mu + sigma * eps; Bernoulli decoder."""

    def __init__(self, cfg: VAEConfig) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg
        n = cfg.image_channels * cfg.image_size**2
        self.body = _mlp([n, *cfg.hidden], final_act=True)                               # (B, n) -> (B, h)
        self.fc_mu = nn.Linear(cfg.hidden[-1], cfg.latent_dim)                          # (B, D)
        self.fc_logvar = nn.Linear(cfg.hidden[-1], cfg.latent_dim)                      # (B, D)
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden), n], final_act=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.flatten(1))
        return self.fc_mu(h), self.fc_logvar(h)

    def terms(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> ElboTerms:
        """Single-sample Monte-Carlo ELBO terms (eps may be given for reproducibility)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, eps)
        return ElboTerms(recon=bce_sum_logits(self.decode_logits(z), x), kl=gaussian_kl(mu, logvar))


class ConvVAE(VAE):
    """Seed §3.5: strided-conv encoder 32 -> 16 -> 8 -> 4, transposed-conv decoder back to 32x32x3."""

    def __init__(self, cfg: VAEConfig) -> None:
        nn.Module.__init__(self)
        assert cfg.image_size == 32, "the seed's ConvVAE works on 32x32 images"
        self.cfg = cfg
        c = cfg.image_channels
        self.encoder_conv = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1), nn.ReLU(),    # (B, 32, 16, 16)
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),   # (B, 64, 8, 8)
            nn.Conv2d(64, 128, 4, stride=2, padding=1), nn.ReLU(),  # (B, 128, 4, 4)
        )
        self.fc_mu = nn.Linear(128 * 4 * 4, cfg.latent_dim)
        self.fc_logvar = nn.Linear(128 * 4 * 4, cfg.latent_dim)
        self.decoder_fc = nn.Linear(cfg.latent_dim, 128 * 4 * 4)
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1), nn.ReLU(),  # (B, 64, 8, 8)
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),   # (B, 32, 16, 16)
            nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),                # logits (B, C, 32, 32)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder_conv(x).flatten(1)                                   # (B, 2048)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.decoder_fc(z)).view(-1, 128, 4, 4)
        return self.decoder_conv(h)


def build_model(cfg: VAEConfig) -> Autoencoder:
    return {"ae": Autoencoder, "vae": VAE, "convvae": ConvVAE}[cfg.kind](cfg)
