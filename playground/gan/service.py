"""The GAN family's service: five digit GANs loaded once, sampling, side-by-side comparison with
discriminator scores and class histograms, latent walks. No gradio here."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core import validation as V
from ..core.checkpoint import load_weights, read_history, read_json
from ..core.images import to_pil
from ..core.service import Service
from ..core.seeding import randn
from ..eval.classifier import DigitClassifier, load_classifier
from .model import GANConfig, build

# API name -> (checkpoint folder, label shown in the UI)
GAN_MODELS: dict[str, tuple[str, str]] = {
    "gan": ("gan_mlp", "GAN (MLP, BCE)"),
    "dcgan": ("gan_dcgan", "DCGAN"),
    "wgan": ("gan_wgan", "WGAN (weight clipping)"),
    "wgan-gp": ("gan_wgangp", "WGAN-GP"),
    "cgan": ("gan_cgan", "Conditional GAN"),
}
MAX_TRUNCATION = 2.0
INTERPOLATIONS = ("linear", "slerp")
TRUNCATIONS = ("rescale", "clip")   # z * psi, or z clamped to [-psi, psi] (Brock et al. 2019, §3.1)


class LoadedGAN:
    def __init__(self, cfg: GANConfig, train: dict, g: torch.nn.Module, d: torch.nn.Module) -> None:
        self.cfg, self.train, self.g, self.d = cfg, train, g, d

    @property
    def loss(self) -> str:
        return self.train.get("loss", "bce")


class GANService(Service):
    def available(self) -> list[str]:
        return self._present({m: folder for m, (folder, _) in GAN_MODELS.items()}, "generator.safetensors")

    def model(self, name: str) -> LoadedGAN:
        V.check_choice(name, "model", list(GAN_MODELS))
        folder = self.settings.checkpoints_dir / GAN_MODELS[name][0]

        def load() -> LoadedGAN:
            conf = read_json(folder / "config.json")
            if conf is None:
                raise FileNotFoundError(f"no checkpoint in {folder}: python -m playground train {folder.name}")
            cfg = GANConfig(**conf["model"])
            g, d = build(cfg)
            g.load_state_dict(load_weights(folder, "generator.safetensors"))
            d.load_state_dict(load_weights(folder, "discriminator.safetensors"))
            return LoadedGAN(cfg, conf["train"], g.to(self.device).eval(), d.to(self.device).eval())

        return self.registry.get(f"gan/{name}", load)

    def classifier(self) -> DigitClassifier:
        return self.registry.get("eval/classifier",
                                 lambda: load_classifier(self.settings.checkpoints_dir / "classifier", self.device))

    def warmup(self) -> None:
        for name in self.available():
            self.sample(name, 1, 0, -1, 1.0)
        self.classifier()

    # ---- validation -------------------------------------------------------------------------
    def _labels(self, m: LoadedGAN, name: str, label: Any, n: int) -> torch.Tensor | None:
        lab = V.check_int(-1 if label is None or label == "" else label, "label", -1, 9)
        if not m.cfg.conditional:
            if lab != -1:
                raise V.UserInputError(f"The {GAN_MODELS[name][1]} is unconditional: it takes no digit label "
                                       "(pick the conditional GAN, or leave the label empty / -1).")
            return None
        return torch.full((n,), lab) if lab >= 0 else torch.arange(n) % 10

    def _truncate(self, z: torch.Tensor, t: Any, mode: Any) -> torch.Tensor:
        """The truncation trick with strength ψ: rescale (z ψ, i.e. z ~ N(0, ψ² I)) or clip
        (each coordinate clamped to [-ψ, ψ], the hard version of Brock et al. 2019's resampling)."""
        t = V.check_float(t, "truncation", -1e9, 1e9)
        if t <= 0 or t > MAX_TRUNCATION:
            raise V.UserInputError(f"truncation must be above 0 and at most {MAX_TRUNCATION:g} (1 = the prior), got {t:g}.")
        V.check_choice(mode, "truncation mode", TRUNCATIONS)
        return z * t if mode == "rescale" else z.clamp(-t, t)

    # ---- sampling ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _generate(self, m: LoadedGAN, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        z = z.to(self.device)
        x = m.g(z, labels.to(self.device)) if labels is not None else m.g(z)
        return ((x + 1) / 2).clamp(0, 1).cpu()                            # (N, 1, 28, 28) in [0, 1]

    @torch.inference_mode()
    def scores(self, name: str, x01: torch.Tensor, labels: torch.Tensor | None = None) -> list[float]:
        """D's verdict per digit: P(real) = sigmoid(logit) for BCE models, the critic value for WGANs."""
        m = self.model(name)
        x = (x01 * 2 - 1).to(self.device)
        out = (m.d(x, labels.to(self.device)) if labels is not None else m.d(x)).flatten().cpu()
        return [float(v) for v in (torch.sigmoid(out) if m.loss == "bce" else out)]

    def sample_tensor(self, name: str, n: Any, seed: Any, label: Any = -1, truncation: Any = 1.0,
                      mode: Any = "rescale") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Digits for z_i ~ N(0, I), truncated (see :meth:`_truncate`), row i seeded by (seed, i):
        same seed, same digits, whatever n."""
        m = self.model(name)
        n = V.check_int(n, "number of samples", 1, self.limits.max_samples)
        seed = V.check_seed(seed, self.limits)
        labels = self._labels(m, name, label, n)
        z = self._truncate(randn((n, m.cfg.noise_dim), seed), truncation, mode)
        return self._generate(m, z, labels), labels

    def sample(self, name: str, n: Any = 16, seed: Any = 0, label: Any = -1, truncation: Any = 1.0,
               mode: Any = "rescale") -> list[Image.Image]:
        x, _ = self.sample_tensor(name, n, seed, label, truncation, mode)
        return [to_pil(t) for t in x]

    @torch.inference_mode()
    def classify(self, x01: torch.Tensor) -> np.ndarray:
        return self.classifier()(x01.to(self.device)).argmax(1).cpu().numpy()

    def compare(self, n: Any = 16, seed: Any = 0, truncation: Any = 1.0, mode: Any = "rescale") -> list[dict[str, Any]]:
        """Every available model on the same z (the cGAN cycles through the digits): a grid with
        each sample's D score written under it, and the classifier's class histogram."""
        out = []
        for name in self.available():
            x, labels = self.sample_tensor(name, n, seed, -1, truncation, mode)
            s = self.scores(name, x, labels)
            hist = np.bincount(self.classify(x), minlength=10).tolist()
            out.append({"model": name, "label": GAN_MODELS[name][1], "grid": scored_grid(x, s),
                        "scores": s, "histogram": hist,
                        "score_kind": "P(real)" if self.model(name).loss == "bce" else "critic"})
        return out

    def interpolate(self, name: str, seed_a: Any, seed_b: Any, steps: Any = 10, label: Any = -1,
                    method: str = "slerp") -> list[Image.Image]:
        """A latent walk from z(seed_a) to z(seed_b)."""
        from ..vae.service import slerp

        m = self.model(name)
        steps = V.check_int(steps, "steps", 2, self.limits.max_interp_steps)
        V.check_choice(method, "interpolation", INTERPOLATIONS)
        za = randn((1, m.cfg.noise_dim), V.check_seed(seed_a, self.limits))[0]
        zb = randn((1, m.cfg.noise_dim), V.check_seed(seed_b, self.limits))[0]
        zs = torch.stack([slerp(za, zb, t) if method == "slerp" else (1 - t) * za + t * zb
                          for t in np.linspace(0, 1, steps)])
        labels = self._labels(m, name, label, steps)
        if labels is not None and V.check_int(label, "label", -1, 9) < 0:
            labels = torch.full((steps,), 0)
        return [to_pil(t) for t in self._generate(m, zs, labels)]

    def history(self, name: str) -> list[dict[str, float]]:
        V.check_choice(name, "model", list(GAN_MODELS))
        return read_history(self.settings.checkpoints_dir / GAN_MODELS[name][0] / "history.csv")


def scored_grid(x: torch.Tensor, scores: list[float], scale: int = 3) -> Image.Image:
    """A grid of digits, each with its discriminator score printed underneath."""
    n = len(x)
    nrow = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / nrow))
    cell_w, cell_h = 28 * scale + 6, 28 * scale + 18
    img = Image.new("RGB", (nrow * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (t, s) in enumerate(zip(x, scores)):
        r, c = divmod(i, nrow)
        tile = to_pil(t).resize((28 * scale, 28 * scale), Image.NEAREST).convert("RGB")
        img.paste(tile, (c * cell_w + 3, r * cell_h + 2))
        draw.text((c * cell_w + 6, r * cell_h + 28 * scale + 3), f"{s:+.2f}" if abs(s) < 100 else f"{s:.0f}",
                  fill=(40, 40, 60))
    return img
