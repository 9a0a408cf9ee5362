"""The VAE family's service: loads the checkpoints once and answers the tab's (and API's) requests.

Plain Python in, PIL images / numbers out; no gradio here. Every user error is a
:class:`~playground.core.errors.UserInputError` raised by :mod:`playground.core.validation`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core import validation as V
from ..core.checkpoint import load_weights, read_history, read_json
from ..core.images import make_grid, to_pil
from ..core.service import Service
from ..core.seeding import randn
from ..core.sketch import to_mnist_digit
from ..data import mnist
from .model import Autoencoder, VAEConfig, build_model

# name -> label shown in the UI; the names are the API's `model` values
DIGIT_MODELS: dict[str, str] = {
    "vae20": "VAE, 20-d latent",
    "vae2": "VAE, 2-d latent",
    "bvae20": "beta-VAE (beta = 4), 20-d latent",
    "ae": "Autoencoder (no prior), 20-d code",
}
SCENE_MODEL = "convvae"
INTERPOLATIONS = ("linear", "slerp")
CLASS_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


@dataclass(frozen=True)
class LatentMap:
    """The 2-d model's latent plane, drawn as a picture: decoded manifold + encoded test digits."""

    image: Image.Image
    lo: float
    hi: float

    def to_pixel(self, z: np.ndarray) -> tuple[float, float]:
        w, h = self.image.size
        return ((z[0] - self.lo) / (self.hi - self.lo) * w, (self.hi - z[1]) / (self.hi - self.lo) * h)

    def to_latent(self, x: float, y: float) -> np.ndarray:
        w, h = self.image.size
        return np.array([self.lo + x / w * (self.hi - self.lo), self.hi - y / h * (self.hi - self.lo)],
                        dtype=np.float32)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models): follows the great
    circle, so intermediate codes keep the norm typical of N(0, I) samples instead of shrinking."""
    a, b = z0 / z0.norm(), z1 / z1.norm()
    omega = torch.arccos(torch.clamp((a * b).sum(), -1.0, 1.0))
    if float(omega) < 1e-4:
        return (1 - t) * z0 + t * z1
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * z0 + torch.sin(t * omega) / so * z1


class VAEService(Service):
    # ---- models -------------------------------------------------------------------------------
    def available(self) -> list[str]:
        return self._present({m: m for m in DIGIT_MODELS}, "model.safetensors")

    def model(self, name: str) -> Autoencoder:
        V.check_choice(name, "model", list(DIGIT_MODELS) + [SCENE_MODEL])
        folder = self.settings.checkpoints_dir / name

        def load() -> Autoencoder:
            cfg = read_json(folder / "config.json")
            if cfg is None:
                raise FileNotFoundError(f"no checkpoint in {folder}; train it: python -m playground train {name}")
            net = build_model(VAEConfig(**cfg["model"]))
            net.load_state_dict(load_weights(folder))
            return net.to(self.device).eval()

        return self.registry.get(f"vae/{name}", load)

    def config(self, name: str) -> VAEConfig:
        return self.model(name).cfg

    def warmup(self) -> None:
        """Load every model and precompute what the first request would otherwise wait for."""
        for name in self.available():
            self.model(name)
            self.slider_dims(name)
        if (self.settings.checkpoints_dir / SCENE_MODEL / "model.safetensors").exists():
            self.model(SCENE_MODEL)
        if "vae2" in self.available():
            _ = self.latent_map

    # ---- decode / sample ----------------------------------------------------------------------
    @torch.inference_mode()
    def _decode(self, name: str, z: torch.Tensor) -> torch.Tensor:
        return self.model(name).decode(z.to(self.device)).cpu()

    def decode(self, z: Any, model: str = "vae20") -> Image.Image:
        """A latent vector -> the decoded 28x28 digit."""
        net = self.model(model)
        vec = V.check_vector(z, "z", net.latent_dim, self.limits.max_abs_latent)
        return to_pil(self._decode(model, torch.from_numpy(vec)[None])[0])

    def with_dims(self, z: Any, dims: list[int], values: Any, model: str = "vae20") -> list[float]:
        """The code ``z`` (empty = zeros) with coordinates ``dims`` set to ``values`` (the sliders)."""
        d = self.model(model).latent_dim
        base = V.check_vector(z, "z", d, self.limits.max_abs_latent) if z not in (None, "", []) else np.zeros(d)
        out = [float(v) for v in base]
        for i, v in zip(dims, values):
            out[V.check_int(i, "dimension", 0, d - 1)] = V.check_float(v, f"z[{i}]", -self.limits.max_abs_latent,
                                                                       self.limits.max_abs_latent)
        return out

    def check_n(self, n: Any) -> int:
        return V.check_int(n, "number of samples", 1, self.limits.max_samples)

    def sample(self, n: Any = 16, seed: Any = 0, model: str = "vae20") -> list[Image.Image]:
        """Decode z ~ N(0, I) (the prior): row i depends only on (seed, i)."""
        net = self.model(model)
        n, seed = self.check_n(n), V.check_seed(seed, self.limits)
        z = randn((n, net.latent_dim), seed)
        return [to_pil(x) for x in self._decode(model, z)]

    def prior_comparison(self, n: Any = 16, seed: Any = 0) -> tuple[Image.Image, Image.Image]:
        """The seed's §2.2 point: the same N(0, I) codes through the AE and through the VAE."""
        n, seed = self.check_n(n), V.check_seed(seed, self.limits)
        z = randn((n, self.model("vae20").latent_dim), seed)
        nrow = int(math.ceil(math.sqrt(n)))
        return (to_pil(make_grid(self._decode("ae", z), nrow=nrow)),
                to_pil(make_grid(self._decode("vae20", z), nrow=nrow)))

    def random_z(self, seed: Any, model: str = "vae20") -> list[float]:
        seed = V.check_seed(seed, self.limits)
        z = randn((1, self.model(model).latent_dim), seed)[0]
        return [round(float(v), 3) for v in z.clamp(-4, 4)]

    # ---- encode -------------------------------------------------------------------------------
    def digit_from_image(self, image: Any) -> torch.Tensor:
        """An uploaded or drawn image -> a (1, 1, 28, 28) MNIST-style tensor."""
        img = V.check_image(image, self.limits)
        return torch.from_numpy(to_mnist_digit(img))[None, None]

    @torch.inference_mode()
    def encode_tensor(self, x: torch.Tensor, model: str) -> dict[str, Any]:
        net = self.model(model)
        xd = x.to(self.device)
        mu, logvar = net.encode(xd)
        t = net.terms(xd, torch.zeros_like(mu))  # decode the mean; the KL is exact
        return {
            "z": [round(float(v), 4) for v in mu[0].cpu()],
            "reconstruction": to_pil(net.decode(mu)[0].cpu()),
            "input": to_pil(x[0]),
            "recon_nats": float(t.recon[0]),
            "kl_nats": float(t.kl[0]),
            "neg_elbo_nats": float(t.recon[0] + t.kl[0]),
        }

    def encode(self, image: Any, model: str = "vae20") -> dict[str, Any]:
        """Encode an image: posterior mean z, reconstruction, and the ELBO split (nats)."""
        return self.encode_tensor(self.digit_from_image(image), model)

    def check_test_index(self, index: Any) -> int:
        return V.check_int(index, "test digit index", 0, len(self.test.y) - 1)

    def test_digit(self, index: Any) -> Image.Image:
        return to_pil(self.test.x[self.check_test_index(index)])

    def encode_test_digit(self, index: Any, model: str = "vae20") -> dict[str, Any]:
        i = self.check_test_index(index)
        out = self.encode_tensor(self.test.x[i:i + 1], model)
        out["label"] = int(self.test.y[i])
        return out

    @cached_property
    def test(self) -> mnist.Split:
        return mnist.digits("test")

    # ---- interpolation --------------------------------------------------------------------------
    def interpolate(self, a: Any, b: Any, steps: Any = 10, method: str = "linear",
                    model: str = "vae20") -> list[Image.Image]:
        """Decode ``steps`` codes between the codes of ``a`` and ``b`` (test-digit indices or images)."""
        steps = V.check_int(steps, "steps", 2, self.limits.max_interp_steps)
        V.check_choice(method, "interpolation", INTERPOLATIONS)
        za, zb = (self._code_of(v, model) for v in (a, b))
        zs = torch.stack([slerp(za, zb, t) if method == "slerp" else (1 - t) * za + t * zb
                          for t in np.linspace(0.0, 1.0, steps)])
        return [to_pil(x) for x in self._decode(model, zs)]

    def _code_of(self, v: Any, model: str) -> torch.Tensor:
        if isinstance(v, (int, float, np.integer, str)) and not isinstance(v, bool):
            x = self.test.x[self.check_test_index(v)][None]
        else:
            x = self.digit_from_image(v)
        with torch.inference_mode():
            mu, _ = self.model(model).encode(x.to(self.device))
        return mu[0].cpu()

    # ---- the 20-d model's sliders -------------------------------------------------------------
    def slider_dims(self, model: str = "vae20") -> list[int]:
        """Latent dimensions ordered by their average KL over the test digits: the ones the model
        actually uses ("active units", Burda et al. 2016) come first."""
        def compute() -> list[int]:
            with torch.inference_mode():
                mu, logvar = self.model(model).encode(self.test.x.to(self.device))
                if logvar is None:  # the AE: order by spread of the code
                    score = mu.var(0)
                else:
                    score = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean(0)
            return [int(i) for i in torch.argsort(score.cpu(), descending=True)]
        return self.registry.get(f"vae/{model}/dims", compute)

    # ---- the 2-d model's latent map ----------------------------------------------------------
    @cached_property
    def latent_map(self) -> LatentMap:
        """Decoded manifold (a grid of decodes over [-3, 3]^2) with the test digits' posterior means
        drawn as dots coloured by class."""
        lo, hi, cells, cell = -3.0, 3.0, 15, 28
        centres = np.linspace(lo, hi, cells * 2 + 1)[1::2]
        zz = torch.tensor([[x, y] for y in centres[::-1] for x in centres], dtype=torch.float32)
        tiles = self._decode("vae2", zz)
        grid = make_grid(tiles, nrow=cells, pad=0)
        bg = to_pil(grid).convert("RGB")
        bg = Image.blend(bg, Image.new("RGB", bg.size, (0, 0, 0)), 0.35)
        lm = LatentMap(bg, lo, hi)
        with torch.inference_mode():
            mu, _ = self.model("vae2").encode(self.test.x.to(self.device))
        draw = ImageDraw.Draw(bg)
        for z, y in zip(mu.cpu().numpy(), self.test.y.numpy()):
            px, py = lm.to_pixel(z)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=CLASS_COLOURS[int(y)], outline=(0, 0, 0))
        return lm

    def latent_map_image(self, z: Any = None) -> Image.Image:
        """The map, with the current code ``z`` (2 numbers) marked by a crosshair."""
        lm = self.latent_map
        if z is None:
            return lm.image
        vec = V.check_vector(z, "z", 2, self.limits.max_abs_latent)
        img = lm.image.copy()
        px, py = lm.to_pixel(vec)
        d = ImageDraw.Draw(img)
        d.ellipse([px - 9, py - 9, px + 9, py + 9], outline=(255, 255, 255), width=3)
        d.line([px - 14, py, px + 14, py], fill=(255, 255, 255), width=1)
        d.line([px, py - 14, px, py + 14], fill=(255, 255, 255), width=1)
        return img

    def map_click(self, x: Any, y: Any) -> list[float]:
        """A click on the map (pixels) -> the latent code under it."""
        w, h = self.latent_map.image.size
        x = V.check_float(x, "x", 0, w)
        y = V.check_float(y, "y", 0, h)
        return [round(float(v), 3) for v in self.latent_map.to_latent(x, y)]

    # ---- colour scenes (ConvVAE) --------------------------------------------------------------
    def scene_reconstructions(self, n: Any = 8, seed: Any = 0) -> tuple[Image.Image, Image.Image]:
        """Held-out scenes (top) and their ConvVAE reconstructions (bottom)."""
        from ..data import scenes

        n = V.check_int(n, "number of scenes", 1, 16)
        seed = V.check_seed(seed, self.limits)
        batch = scenes.render_dataset(n, seed=seed, size=32, split="val").images
        with torch.inference_mode():
            net = self.model(SCENE_MODEL)
            mu, _ = net.encode(batch.to(self.device))
            rec = net.decode(mu).cpu()
        return to_pil(make_grid(batch, nrow=n)), to_pil(make_grid(rec, nrow=n))

    def scene_samples(self, n: Any = 8, seed: Any = 0) -> Image.Image:
        n = V.check_int(n, "number of scenes", 1, 16)
        seed = V.check_seed(seed, self.limits)
        z = randn((n, self.model(SCENE_MODEL).latent_dim), seed)
        return to_pil(make_grid(self._decode(SCENE_MODEL, z), nrow=n))

    # ---- training curves ------------------------------------------------------------------------
    def history(self, model: str) -> list[dict[str, float]]:
        V.check_choice(model, "model", list(DIGIT_MODELS) + [SCENE_MODEL])
        return read_history(self.settings.checkpoints_dir / model / "history.csv")

    def card_figures(self, model: str) -> dict[str, Any]:
        return read_json(self.settings.checkpoints_dir / model / "metrics.json", {}) or {}
