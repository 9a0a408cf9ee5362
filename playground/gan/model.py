"""The seed's GANs for 28x28 digits (sections 4.3, 5.1-5.4). Images live in [-1, 1] (Tanh).

Discriminators return raw scores (logits, or critic values for the WGANs): the sigmoid of the
seed's BCE discriminators is folded into the loss (``losses.bce_losses``) for numerical stability.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

KINDS = ("mlp", "dcgan", "wgan", "wgangp", "cgan")


@dataclass
class GANConfig:
    kind: str = "mlp"
    noise_dim: int = 100
    num_classes: int = 10
    embed_dim: int = 50

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind}"

    @property
    def conditional(self) -> bool:
        return self.kind == "cgan"

    def to_dict(self) -> dict:
        return asdict(self)


class MLPGenerator(nn.Module):
    """Seed §4.3: z (100) -> 256 -> 512 -> 1024 -> 784, LeakyReLU + BatchNorm, Tanh."""

    def __init__(self, noise_dim: int = 100) -> None:
        super().__init__()
        dims = [noise_dim, 256, 512, 1024]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.BatchNorm1d(b)]
        self.model = nn.Sequential(*layers, nn.Linear(1024, 784), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(-1, 1, 28, 28)                            # (B, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    """Seed §4.3: 784 -> 1024 -> 512 -> 256 -> 1 with LeakyReLU and dropout 0.3 (a logit)."""

    def __init__(self) -> None:
        super().__init__()
        dims = [784, 1024, 512, 256]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2), nn.Dropout(0.3)]
        self.model = nn.Sequential(*layers, nn.Linear(256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))                                     # (B, 1)


class DCGANGenerator(nn.Module):
    """Seed §5.1 adapted to 28x28x1: project z to 7x7x128, two stride-2 transposed convolutions."""

    def __init__(self, noise_dim: int = 100, ngf: int = 64) -> None:
        super().__init__()
        self.ngf = ngf
        self.project = nn.Sequential(nn.Linear(noise_dim, ngf * 2 * 7 * 7, bias=False),
                                     nn.BatchNorm1d(ngf * 2 * 7 * 7), nn.ReLU(True))
        self.main = nn.Sequential(
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 14x14
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh(),                                  # 28x28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(self.project(z).view(-1, self.ngf * 2, 7, 7))


class MinibatchStd(nn.Module):
    """Append the batch's mean feature standard deviation as one more channel (Karras et al. 2018,
    "Progressive Growing of GANs", §3): a generator that draws the same few digits gives itself
    away, so the discriminator can punish mode collapse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.std(dim=0, unbiased=False).mean() if x.shape[0] > 1 else x.new_zeros(())
        return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


class DCGANDiscriminator(nn.Module):
    """Seed §5.1 adapted: strided convolutions 28 -> 14 -> 7, LeakyReLU, BatchNorm, a logit; plus
    dropout 0.3 (as in the seed's MLP discriminator) and a minibatch-std channel before the last
    layer. On 4,000 digits the seed's version overpowered its generator (D loss ~0.35) and the
    generator dropped the digit 1 almost entirely (class entropy 2.05 nats; 2.07 with the
    minibatch-std channel alone)."""

    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True), nn.Dropout(0.3),           # 14x14
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),  # 7x7
            nn.Dropout(0.3),
            MinibatchStd(),
            nn.Flatten(), nn.Linear((ndf * 2 + 1) * 7 * 7, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class WGANCritic(nn.Module):
    """Seed §5.2: 784 -> 512 -> 256 -> 1, LeakyReLU, **no sigmoid** (a critic, not a classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256), nn.LeakyReLU(0.2),
                                   nn.Linear(256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


class ConditionalGenerator(nn.Module):
    """Seed §5.4: [z, embed(label)] (100 + 50) -> 256 -> 512 -> 784, LeakyReLU, Tanh."""

    def __init__(self, noise_dim: int = 100, num_classes: int = 10, embed_dim: int = 50) -> None:
        super().__init__()
        self.label_embedding = nn.Embedding(num_classes, embed_dim)
        self.model = nn.Sequential(nn.Linear(noise_dim + embed_dim, 256), nn.LeakyReLU(0.2),
                                   nn.Linear(256, 512), nn.LeakyReLU(0.2), nn.Linear(512, 784), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, self.label_embedding(labels)], dim=1)              # (B, 150)
        return self.model(x).view(-1, 1, 28, 28)


class ConditionalDiscriminator(nn.Module):
    """The matching discriminator, with a *projection* of the label (Miyato & Koyama 2018, eq. 3):
    D(x, y) = ψ(φ(x)) + embed(y) · φ(x), φ: 784 -> 512 -> 256 (LeakyReLU, dropout 0.3).

    The seed concatenates embed(y) to x instead; on 4,000 digits that discriminator barely looks at
    the label, and the generator draws the wrong digit about a third of the time. The inner product
    makes "is this x a plausible *y*" the discriminator's main question. An auxiliary classifier
    head on the same features (AC-GAN, Odena et al. 2017, eq. 2-3) is trained on real digits only;
    the generator is also asked to make its digits classified as the requested label.
    """

    def __init__(self, num_classes: int = 10, embed_dim: int = 50) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                                      nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3))
        self.out = nn.Linear(256, 1)
        self.label_embedding = nn.Embedding(num_classes, 256)
        self.classify = nn.Linear(256, num_classes)

    def forward_with_classes(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the real/fake logit (B, 1), the auxiliary class logits (B, num_classes))."""
        h = self.features(x.flatten(1))                                     # (B, 256)
        return self.out(h) + (self.label_embedding(labels) * h).sum(1, keepdim=True), self.classify(h)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.forward_with_classes(x, labels)[0]


def build(cfg: GANConfig) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator/critic) for ``cfg.kind``."""
    if cfg.kind == "mlp":
        return MLPGenerator(cfg.noise_dim), MLPDiscriminator()
    if cfg.kind == "dcgan":
        return DCGANGenerator(cfg.noise_dim), DCGANDiscriminator()
    if cfg.kind in ("wgan", "wgangp"):
        return MLPGenerator(cfg.noise_dim), WGANCritic()
    return (ConditionalGenerator(cfg.noise_dim, cfg.num_classes, cfg.embed_dim),
            ConditionalDiscriminator(cfg.num_classes, cfg.embed_dim))
