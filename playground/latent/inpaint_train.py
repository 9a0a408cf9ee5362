"""Fine-tuning the 9-channel inpainting U-Net from ``tiny_sd``'s text-to-image U-Net.

    python -m playground train tiny_sd_inpaint

The SD-inpainting recipe (Rombach et al. 2022, LDM §4.5; the ``stable-diffusion-inpainting`` model card),
at our scale:

- the U-Net: :func:`playground.latent.inpaint.make_inpaint_unet` — the trained text-to-image U-Net with 5
  extra, zero-initialised input channels, so training starts from ε_θ exactly;
- the data: fresh ``split="train"`` scenes every step (:func:`finetune.scene_images`) with a random
  mask m per image: (a) a box or ellipse over one object's ``box``, grown 1-4 px (what the evaluation
  repaints), (b) 1-3 random brush strokes, (c) 1-2 random rectangles, (d) 10% the whole image (SD uses
  25% full masks so the model keeps its text-to-image ability);
- the inputs, exactly as ``StableDiffusionInpaintPipeline`` builds them at inference: the masked image
  x ⊙ (m < 0.5) in [-1, 1] (the hole set to 0 = mid-gray), encoded by the frozen VAE and scaled,
  z_m = s · E(x ⊙ (1 − m)); the mask at latent resolution by nearest-neighbour ``interpolate``;
  U-Net input [z_t ; m ; z_m] (9 channels);
- the loss, LDM eq. 3 unchanged: ‖ε − ε_θ([z_t ; m ; z_m], t, τ_θ(y))‖², z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε,
  z_0 = s · E(x) (posterior samples, as tiny_sd's own training); 10% of the captions replaced by ""
  (classifier-free guidance, Ho & Salimans 2022);
- only the U-Net trains (VAE and text encoder frozen, as in SD); the shared loop
  :func:`playground.latent.finetune.finetune` does AdamW, warm-up + cosine decay, clipping, the EMA (what
  ships) and exact resumption from ``runs/tiny_sd_inpaint/last.pt``.

The result is a complete ``StableDiffusionInpaintPipeline`` folder (the base's VAE, text encoder,
tokenizer and scheduler with the EMA 9-channel U-Net), loadable with
``StableDiffusionInpaintPipeline.from_pretrained("checkpoints/tiny_sd_inpaint")``.

Sizing (this 2-core CPU, torch 2.14, a random pipeline of tiny_sd's size, batch 32, one thread, CPU
seconds while another training shared the machine): see :data:`SIZING_NOTE`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionInpaintPipeline
from PIL import Image, ImageDraw

from ..core.checkpoint import read_json, write_history, write_json
from ..core.modelcard import write_card
from ..core.settings import REPO_ROOT, get_settings
from .components import count_params, load_pipeline, save_pipeline, train_scheduler_like, training_target
from .evaluate import weights_hash
from .finetune import FinetuneConfig, encode_scaled, finetune, scene_images
from .inpaint import NAME, make_inpaint_unet
from .train import drop_captions

COMMAND = "python -m playground train tiny_sd_inpaint"
SECONDS_PER_STEP_1_THREAD = 1.15    # measured, batch 32 (see SIZING_NOTE); two threads ≈ 1.7× faster


@dataclass
class InpaintTrainConfig:
    loop: FinetuneConfig
    caption_dropout: float = 0.1
    # mask mix (the rest: random rectangles)
    p_full: float = 0.10
    p_object: float = 0.45
    p_strokes: float = 0.25
    object_grow: tuple[float, float] = (1.0, 4.0)      # px added around an object's box
    p_ellipse: float = 0.3                              # object masks: an ellipse around the box instead
    monitor_items: int = 64                             # fixed val scenes for the EMA's fixed-noise loss
    monitor_every: int = 250
    notes: str = ""

    def __post_init__(self) -> None:
        assert 0.0 <= self.caption_dropout < 1.0
        assert min(self.p_full, self.p_object, self.p_strokes) >= 0
        assert self.p_full + self.p_object + self.p_strokes <= 1


PRESETS: dict[str, InpaintTrainConfig] = {
    # 33 min on 2 threads (see SIZING_NOTE)
    "tiny_sd_inpaint": InpaintTrainConfig(FinetuneConfig(steps=2500, batch=32, lr=2e-4, warmup=100, ema=0.998,
                                                         max_minutes=36.0, log_every=25, save_every=50, stage=3),
                                          notes="≈ 28 min on 2 CPU threads"),
    "test": InpaintTrainConfig(FinetuneConfig(steps=4, batch=4, lr=1e-3, warmup=1, ema=0.9, log_every=1,
                                              save_every=1, stage=3),
                               monitor_items=4, monitor_every=2, notes="unit tests"),
}


def get_preset(name: str, **overrides: Any) -> InpaintTrainConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown {NAME} preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ----------------------------------------------------------------------------- random masks

def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen))


def _randint(gen: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi] (both included)."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def object_mask(box: tuple[float, float, float, float], size: int, gen: torch.Generator,
                grow: tuple[float, float] = (1.0, 4.0), p_ellipse: float = 0.3) -> Image.Image:
    """A box (or, with probability ``p_ellipse``, the ellipse circumscribing it) over ``box`` (64-px units)
    grown by U(grow) px: what the evaluation repaints to change one object. 0/255 ``L``."""
    s = size / 64.0
    g = _uniform(gen, *grow)
    left, top, right, bottom = (v * s for v in box)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    if float(torch.rand((), generator=gen)) < p_ellipse:
        cx, cy = (left + right) / 2, (top + bottom) / 2
        rx, ry = (right - left) / 2 * math.sqrt(2) + g, (bottom - top) / 2 * math.sqrt(2) + g
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    else:
        draw.rectangle([math.floor(left - g), math.floor(top - g), math.ceil(right + g) - 1,
                        math.ceil(bottom + g) - 1], fill=255)
    return img


def random_strokes(size: int, gen: torch.Generator, n_max: int = 3, width: tuple[int, int] = (3, 10)) -> Image.Image:
    """1 … ``n_max`` brush strokes: polylines of 2-5 points, round joints and caps, 3-10 px wide."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s = size / 64.0
    for _ in range(_randint(gen, 1, n_max)):
        w = max(1, round(_randint(gen, *width) * s))
        pts = [(_uniform(gen, 0, size), _uniform(gen, 0, size))]
        for _ in range(_randint(gen, 1, 4)):
            x, y = pts[-1]
            step, angle = _uniform(gen, 6, 24) * s, _uniform(gen, 0, 2 * math.pi)
            pts.append((min(max(x + step * math.cos(angle), 0), size - 1),
                        min(max(y + step * math.sin(angle), 0), size - 1)))
        draw.line(pts, fill=255, width=w, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=255)
    return img


def random_rectangles(size: int, gen: torch.Generator, n_max: int = 2) -> Image.Image:
    """1 … ``n_max`` axis-aligned rectangles, each side 8-40 px (64-px units)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s = size / 64.0
    for _ in range(_randint(gen, 1, n_max)):
        w, h = _uniform(gen, 8, 40) * s, _uniform(gen, 8, 40) * s
        x, y = _uniform(gen, 0, size - w), _uniform(gen, 0, size - h)
        draw.rectangle([round(x), round(y), round(x + w) - 1, round(y + h) - 1], fill=255)
    return img


def random_masks(specs: list[Any], size: int, gen: torch.Generator, cfg: InpaintTrainConfig) -> torch.Tensor:
    """One mask per scene, (B, 1, H, W) float in {0, 1} (1 = repaint): full / object / strokes / rectangles
    with probabilities ``p_full``, ``p_object``, ``p_strokes`` and the rest."""
    out = torch.zeros((len(specs), 1, size, size))
    for i, spec in enumerate(specs):
        u = float(torch.rand((), generator=gen))
        if u < cfg.p_full:
            out[i] = 1.0
            continue
        if u < cfg.p_full + cfg.p_object:
            obj = spec.objects[_randint(gen, 0, len(spec.objects) - 1)]
            img = object_mask(obj.box, size, gen, cfg.object_grow, cfg.p_ellipse)
        elif u < cfg.p_full + cfg.p_object + cfg.p_strokes:
            img = random_strokes(size, gen)
        else:
            img = random_rectangles(size, gen)
        out[i, 0] = torch.from_numpy(np.asarray(img) > 127).float()
    return out


# ----------------------------------------------------------------------------- the loss

def inpaint_inputs(vae: torch.nn.Module, images01: torch.Tensor, masks: torch.Tensor, latent_size: int,
                   gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_0, m at latent size, z_m) for images in [0, 1] and masks (B, 1, H, W) in {0, 1}, built as the
    pipeline builds them: masked image = x ⊙ (m < 0.5) in [-1, 1] (so the hole is 0 there, 0.5 in [0, 1]),
    z = s · E(·) (posterior samples from ``gen``, or means with ``gen=None``), the mask resized with
    ``F.interpolate``'s default nearest mode (``prepare_mask_latents``)."""
    masked01 = torch.where(masks < 0.5, images01, torch.full_like(images01, 0.5))
    z0 = encode_scaled(vae, images01, gen)
    zm = encode_scaled(vae, masked01, gen)
    m = F.interpolate(masks, size=(latent_size, latent_size))
    return z0, m, zm


def make_loss_fn(parts: dict[str, Any], unet: torch.nn.Module, cfg: InpaintTrainConfig, size: int) -> Any:
    """``loss_fn(step, gen)`` for :func:`finetune`: MSE of the 9-channel U-Net (ε or v, as the base predicts) on a fresh batch."""
    vae, te, tok = parts["vae"], parts["text_encoder"], parts["tokenizer"]
    sched = train_scheduler_like(parts["scheduler"])
    latent = size // (2 ** (len(vae.config.block_out_channels) - 1))
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids[0]
    batch = cfg.loop.batch

    def loss_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        scenes = scene_images(batch, cfg.loop.seed, step, size=size)
        masks = random_masks(scenes.specs, size, gen, cfg)
        z0, m, zm = inpaint_inputs(vae, scenes.images, masks, latent, gen)
        ids = tok(scenes.captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        ids = drop_captions(ids, empty, cfg.caption_dropout, gen)
        with torch.no_grad():
            hidden = te(ids)[0]                                            # (B, 77, d), frozen τ_θ
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        z_t = sched.add_noise(z0, noise, t)
        pred = unet(torch.cat([z_t, m, zm], dim=1), t, encoder_hidden_states=hidden).sample   # (B, 4, h, w)
        err = (pred - training_target(sched, z0, noise, t)).pow(2)
        loss = err.mean()
        inside = float((err.detach().mean(1, keepdim=True) * m).sum() / m.sum().clamp_min(1))
        return loss, {"loss_in_mask": inside}

    return loss_fn


def make_monitor(parts: dict[str, Any], cfg: InpaintTrainConfig, size: int) -> Any:
    """The EMA U-Net's loss on fixed ``split="val"`` scenes, masks, t and ε (a low-variance curve)."""
    vae, te, tok = parts["vae"], parts["text_encoder"], parts["tokenizer"]
    sched = train_scheduler_like(parts["scheduler"])
    latent = size // (2 ** (len(vae.config.block_out_channels) - 1))
    gen = torch.Generator().manual_seed(cfg.loop.seed + 4242)
    val = scene_images(cfg.monitor_items, cfg.loop.seed, 0, size=size, split="val")
    masks = random_masks(val.specs, size, gen, cfg)
    z0, m, zm = inpaint_inputs(vae, val.images, masks, latent, None)
    ids = tok(val.captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = te(ids)[0]
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    z_t = sched.add_noise(z0, noise, t)
    target = training_target(sched, z0, noise, t)

    @torch.no_grad()
    def monitor(ema: dict[str, torch.nn.Module]) -> dict[str, float]:
        unet = ema["unet"].eval()
        pred = torch.cat([unet(torch.cat([z_t, m, zm], 1)[i:i + 32], t[i:i + 32],
                               encoder_hidden_states=hidden[i:i + 32]).sample for i in range(0, len(z0), 32)])
        err = (pred - target).pow(2)
        return {"ema_val_loss": float(err.mean()),
                "ema_val_loss_in_mask": float((err.mean(1, keepdim=True) * m).sum() / m.sum().clamp_min(1))}

    return monitor


# ----------------------------------------------------------------------------- the command

def inpaint_pipeline(parts: dict[str, Any], unet: torch.nn.Module) -> Any:
    """A ``StableDiffusionInpaintPipeline`` around the base's parts and the 9-channel U-Net."""
    for k in ("vae", "text_encoder"):
        parts[k].eval()
    return StableDiffusionInpaintPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"],
                                          tokenizer=parts["tokenizer"], unet=unet.eval(),
                                          scheduler=parts["scheduler"], safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)


def train(out_dir: Path | None = None, base: Path | None = None, preset: str = NAME, resume: bool = True,
          progress: bool = True, stop_after: int | None = None, runs_dir: Path | None = None,
          cfg: InpaintTrainConfig | None = None) -> dict:
    """Fine-tune the 9-channel U-Net from the pipeline in ``base`` (default ``checkpoints/tiny_sd``) and write
    ``out_dir`` (default ``checkpoints/tiny_sd_inpaint``); returns the training record.

    ``preset`` names a :data:`PRESETS` entry ("tiny_sd_inpaint" or "test"); ``cfg``, if given, replaces it.
    ``stop_after`` ends this invocation after that many steps, as an interruption would (returns
    ``{"name", "interrupted_at": {...}}``); calling again with ``resume`` continues exactly where it stopped;
    ``resume=False`` deletes the resume state first."""
    name = preset
    cfg = cfg if cfg is not None else get_preset(name)
    settings = get_settings()
    out_dir = Path(out_dir or settings.checkpoints_dir / NAME)
    base = Path(base or settings.checkpoints_dir / "tiny_sd")
    runs_dir = Path(runs_dir or REPO_ROOT / "runs" / NAME)
    if not (base / "model_index.json").exists():
        raise FileNotFoundError(f"no base pipeline in {base}: train it first (python -m playground train tiny_sd)")
    resume_path = runs_dir / "last.pt"
    if not resume:
        resume_path.unlink(missing_ok=True)
    pipe = load_pipeline(base)
    parts = dict(pipe.components)
    for k in ("vae", "text_encoder"):
        parts[k].requires_grad_(False)
        parts[k].eval()
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    unet = make_inpaint_unet(pipe.unet)
    unet.requires_grad_(True)
    monitor = make_monitor(parts, cfg, size) if cfg.monitor_every else None
    rec = finetune(NAME, {"unet": unet}, make_loss_fn(parts, unet, cfg, size), cfg.loop, resume_path,
                   progress=progress, stop_after=stop_after, monitor=monitor, monitor_every=cfg.monitor_every,
                   origin={"base_weights": weights_hash(pipe)})
    if rec is None:
        return {"name": NAME, "interrupted_at": {"steps_this_run": stop_after}}
    ema_unet = rec["ema"]["unet"]
    save_pipeline(inpaint_pipeline(parts, ema_unet), out_dir)
    history = rec["history"]
    write_history(out_dir / "history.csv", history)
    last = history[-1] if history else {}
    monitored = [r for r in history if "ema_val_loss" in r]
    record = {
        "name": NAME, "preset": name, "seed": cfg.loop.seed, "torch_threads": torch.get_num_threads(),
        "steps": rec["steps"], "batch": cfg.loop.batch, "lr": cfg.loop.lr, "wall_minutes": rec["wall_minutes"],
        "final_loss": last.get("loss"), "final_loss_in_mask": last.get("loss_in_mask"),
        "final_ema_val_loss": monitored[-1]["ema_val_loss"] if monitored else None,
        "final_ema_val_loss_in_mask": monitored[-1]["ema_val_loss_in_mask"] if monitored else None,
        "params_unet": count_params(ema_unet), "base": str(base.name),
        "base_training": (read_json(base / "training.json", {}) or {}).get("wall_minutes"),
    }
    loop = asdict(cfg.loop)
    write_json(out_dir / "config.json", {"preset": name, "train": {**{k: v for k, v in asdict(cfg).items()
                                                                       if k != "loop"}, "loop": loop},
                                         "unet": {k: v for k, v in dict(ema_unet.config).items()
                                                  if not k.startswith("_")},
                                         "image_size": size, "base": str(base.name)})
    write_json(out_dir / "training.json", record)
    write_inpaint_card(out_dir)
    return record


def write_inpaint_card(folder: Path, extra_sections: dict[str, str] | None = None) -> Path:
    """(Re)write ``folder/README.md`` from its ``config.json``, ``training.json`` and ``metrics.json``
    (the evaluation adds its table and calls this again)."""
    training = read_json(folder / "training.json", {}) or {}
    summary = (
        "A 9-channel inpainting U-Net fine-tuned from our tiny Stable Diffusion (`checkpoints/tiny_sd`) with the "
        "SD-inpainting recipe: the U-Net input is [noisy latents (4) ; mask (1) ; masked-image latents (4)], the "
        "5 extra input channels of `conv_in` zero-initialised, every other weight copied from the text-to-image "
        "U-Net, then trained on random masks. Packaged as a standard diffusers `StableDiffusionInpaintPipeline` "
        "(the base's autoencoder, text encoder, tokenizer and DPM-Solver++ scheduler, unchanged; the EMA "
        "U-Net): `StableDiffusionInpaintPipeline.from_pretrained(\"checkpoints/tiny_sd_inpaint\")`, 64×64 images."
    )
    data = (
        f"{training.get('steps', '?')} steps of {training.get('batch', '?')} fresh `split=\"train\"` scenes from "
        "`playground/data/scenes.py` (held-out colour-shape pairs never shown), each with a random mask: 45% a box "
        "or ellipse over one object (grown 1-4 px), 25% 1-3 brush strokes, 20% 1-2 rectangles, 10% the whole "
        "image; masked image = image with the hole set to mid-gray, as the pipeline does; 10% of the captions "
        "replaced by \"\" (classifier-free guidance). Loss: MSE against the base's own target over all "
        "latents (LDM eq. 3; v = √ᾱₜ ε − √(1−ᾱₜ) z₀ for our v-prediction base, Salimans & Ho 2022 §4). VAE and "
        "text encoder frozen."
    )
    sections = {"Resume state": f"`runs/{NAME}/last.pt`, saved every 50 steps; `--no-resume` starts over.",
                "Sizing": SIZING_NOTE, **(extra_sections or {})}
    return write_card(folder, title=f"{NAME} — 9-channel inpainting U-Net for tiny_sd", summary=summary,
                      command=COMMAND, data=data, extra_sections=sections)


SIZING_NOTE = ("One training step at batch 32 measured 1.1-1.2 CPU-s on one thread of this machine (random pipeline "
               "of tiny_sd's size, another training sharing the CPU): ≈ 0.34 s for the two VAE encodes (image and "
               "masked image), 0.08 s for the frozen text encoder, ≈ 0.7 s for the U-Net's forward and backward "
               "pass; rendering 32 scenes and their masks takes < 0.01 s. With two threads (≈ 1.7× faster) the "
               "preset's 2,500 steps took 33 minutes (capped at 36).")

