"""Training the Canny ControlNet of ``tiny_sd``: one resumable, deterministic command with a progress bar.

    python -m playground train tiny_sd_controlnet

Recipe (ControlNet, Zhang et al. 2023, arXiv:2302.05543, §3 "Method", its training paragraphs):

- **Networks.** The base model (``checkpoints/tiny_sd``: U-Net, autoencoder, text encoder) is *locked*
  (frozen, eval mode); only the ControlNet trains — the trainable copy of the U-Net's encoder and middle
  block, made by :func:`.controlnet.make_controlnet` with zero-initialised convolutions (paper eq. 2).
- **Data.** Fresh training scenes every step (``split="train"``, :func:`.finetune.scene_images`); the
  control image c is the scene's Canny edge map (:func:`.controlnet.canny_array` on the colour image) as
  a 3-channel image in [0, 1], exactly what ``StableDiffusionControlNetPipeline`` feeds the ControlNet.
  The thresholds are drawn per image around the app's default (low ∈ [60, 140], high = low + [60, 140],
  capped at 255) so the net does not depend on one threshold pair; on our crisp renders this changes the
  maps little.
- **Prompts.** 50% of the captions are replaced by "" (the paper's training section: "we randomly replace 50% text
  prompts c_t with empty strings", which "increases ControlNet's ability to directly recognize semantics
  in the input conditioning images"). The base model's own 10% is for classifier-free guidance; here the
  colours still come from the locked U-Net and the text, while the ControlNet must learn to impose the
  edges whether or not there is a caption — in both branches of CFG at sampling time.
- **Loss** (the paper's training objective: LDM eq. 2 with the extra condition c_f):
  ``L = E_{z_0, t, c_t, c_f, ε} ‖ε − ε_θ(z_t, t, c_t, c_f)‖²``, where ε_θ is the locked U-Net with the
  ControlNet's residuals added to its skip connections and middle block
  (``down_block_additional_residuals``, ``mid_block_additional_residual``), z_0 = s·E(x) from the locked
  autoencoder (:func:`.finetune.encode_scaled`), z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε on SD's schedule.
- **Loop.** :func:`.finetune.finetune` (AdamW, warm-up + cosine decay, gradient clipping, EMA of the
  weights — what ships —, resume file every 50 steps, training-time budget). Every batch and draw is a
  pure function of (seed, stage 4, step), so an interrupted run resumes to exactly the same weights.
- **Monitor.** Every ``monitor_every`` steps, on a fixed batch of ``split="val"`` scenes with fixed t and ε:
  the MSE (against the base's target, v or ε) of the EMA ControlNet with its edges (``val_loss_control``)
  and of the locked U-Net alone (``val_loss_plain``, a constant): the gap is what the edges tell the model.

Output: ``checkpoints/tiny_sd_controlnet`` — a ``ControlNetModel`` folder as on the Hub
(``lllyasviel/sd-controlnet-canny``: diffusers' ``config.json`` + ``diffusion_pytorch_model.safetensors``,
loaded with ``ControlNetModel.from_pretrained``), plus ``train_config.json`` (this preset),
``training.json`` (the record), ``history.csv`` and the model card ``README.md``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.checkpoint import read_json, write_history, write_json
from ..core.modelcard import write_card
from ..core.settings import get_settings
from .components import count_params, load_pipeline, save_pipeline, train_scheduler_like, training_target
from .controlnet import NAME, base_weights_hash, canny_array, control_tensor, make_controlnet
from .finetune import FinetuneConfig, encode_scaled, finetune, scene_images
from .train import drop_captions

COMMAND = "python -m playground train tiny_sd_controlnet"
STAGE = 4                                  # mixed into every step's generator (tiny_sd: 1, 2; inpainting: 3)


@dataclass
class ControlNetTrainConfig:
    train: FinetuneConfig
    caption_dropout: float = 0.5           # the paper's 50% empty prompts
    low_range: tuple[int, int] = (60, 140)     # Canny low threshold, drawn uniformly per image
    gap_range: tuple[int, int] = (60, 140)     # high = min(255, low + gap)
    monitor_items: int = 128               # fixed split="val" scenes of the monitor
    monitor_every: int = 250
    notes: str = ""

    def __post_init__(self) -> None:
        assert 0.0 <= self.caption_dropout < 1.0
        assert 0 <= self.low_range[0] <= self.low_range[1] <= 255 and 0 <= self.gap_range[0] <= self.gap_range[1]


PRESETS: dict[str, ControlNetTrainConfig] = {
    # ≈ 21 min on 2 CPU threads: see SIZING_NOTE for the measurement.
    "tiny_sd_controlnet": ControlNetTrainConfig(
        FinetuneConfig(steps=1800, batch=32, lr=2e-4, warmup=100, ema=0.995, max_minutes=26.0, stage=STAGE),
        notes="≈ 21 min on 2 CPU threads (1,800 steps × ≈ 0.69 s)"),
    # For unit tests: a couple of seconds on a random "test" base.
    "test": ControlNetTrainConfig(
        FinetuneConfig(steps=4, batch=4, lr=1e-3, warmup=1, ema=0.9, log_every=1, save_every=1, stage=STAGE),
        monitor_items=4, monitor_every=2, notes="unit tests"),
}

SIZING_NOTE = ("Measured on this 2-core CPU with a random model of tiny_sd's size, one torch thread, while other "
               "jobs shared the machine: one step at batch 32 — render 32 scenes, Canny, encode with the locked "
               "autoencoder, the text encoder, the ControlNet forward and backward through the locked U-Net's "
               "middle and up blocks, AdamW and EMA — costs 1.13-1.23 CPU-seconds (median 1.17). With two threads "
               "(≈ 1.7× assumed) a step takes ≈ 0.69 s, so the preset's 1,800 steps take ≈ 21 min (budget cap "
               "26 min). The ControlNet has 1.01 M parameters (4.1 MB in float32), one image with it (25 "
               "DPM-Solver++ steps, CFG) ≈ 0.95 s at one thread against 0.63 s without.")


def get_preset(name: str, **overrides: Any) -> ControlNetTrainConfig:
    """A copy of ``PRESETS[name]``; ``overrides`` go to the :class:`FinetuneConfig` (``steps``, ``batch``,
    ``lr``, ``seed``, …) or to the ControlNet options (``caption_dropout``, …)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ControlNet preset {name!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[name]
    ft = {k: v for k, v in overrides.items() if k in FinetuneConfig.__dataclass_fields__}
    rest = {k: v for k, v in overrides.items() if k not in ft}
    return replace(cfg, train=replace(cfg.train, **ft), **rest)


# ----------------------------------------------------------------------------- data

def edges_for(images01: torch.Tensor, gen: torch.Generator | None, cfg: ControlNetTrainConfig) -> torch.Tensor:
    """Canny edge maps (B, H, W) uint8 of images in [0, 1]; thresholds drawn from ``gen`` (or the fixed
    100/200 when ``gen`` is None)."""
    pixels = (images01.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    n = len(pixels)
    if gen is None:
        lows, highs = [100] * n, [200] * n
    else:
        lows = torch.randint(cfg.low_range[0], cfg.low_range[1] + 1, (n,), generator=gen).tolist()
        gaps = torch.randint(cfg.gap_range[0], cfg.gap_range[1] + 1, (n,), generator=gen).tolist()
        highs = [min(255, lo + g) for lo, g in zip(lows, gaps)]
    return torch.from_numpy(np.stack([canny_array(p, lo, hi) for p, lo, hi in zip(pixels, lows, highs)]))


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    """Caption ids padded to 77, as the pipeline's ``encode_prompt`` tokenizes them."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def controlled_eps(unet: Any, controlnet: Any | None, z_t: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor,
                   control: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
    """ε_θ(z_t, t, c_t, c_f): the locked U-Net with the ControlNet's residuals (times ``scale``) added to its
    skip connections and middle block; ``controlnet`` None = the plain U-Net."""
    if controlnet is None:
        return unet(z_t, t, encoder_hidden_states=hidden).sample
    down, mid = controlnet(z_t, t, encoder_hidden_states=hidden, controlnet_cond=control, conditioning_scale=scale,
                           return_dict=False)
    return unet(z_t, t, encoder_hidden_states=hidden, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample


def _lock(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


# ----------------------------------------------------------------------------- training

def train(out_dir: Path | None = None, base: Path | None = None, preset: str = NAME,
          cfg: ControlNetTrainConfig | None = None, resume: bool = True, progress: bool = True,
          stop_after: int | None = None, runs_dir: Path | None = None) -> dict[str, Any]:
    """Train the ControlNet of the pipeline folder ``base`` (default ``checkpoints/tiny_sd``) into ``out_dir``
    (default ``checkpoints/tiny_sd_controlnet``); returns the training record.

    ``preset`` picks :data:`PRESETS` (``cfg`` overrides it). ``stop_after`` ends this invocation after
    that many steps, as an interruption would (the record is then ``{"name", "interrupted_at"}``); calling
    again with ``resume`` continues exactly where it stopped. ``resume=False`` deletes the resume state."""
    cfg = cfg or get_preset(preset)
    settings = get_settings()
    out_dir = Path(out_dir or settings.checkpoints_dir / NAME)
    base = Path(base or settings.checkpoints_dir / "tiny_sd")
    runs_dir = Path(runs_dir or out_dir.parent.parent / "runs" / NAME)
    resume_path = runs_dir / "controlnet.pt"
    if not resume:
        resume_path.unlink(missing_ok=True)
    if not (base / "model_index.json").exists():
        raise FileNotFoundError(f"no base pipeline at {base}: train it first (python -m playground train tiny_sd)")

    pipe = load_pipeline(base)
    unet, vae, text_encoder, tokenizer = (_lock(pipe.unet), _lock(pipe.vae), _lock(pipe.text_encoder), pipe.tokenizer)
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    state = torch.get_rng_state()
    try:                                   # make_controlnet draws the embedding's random init: keep it seeded
        torch.manual_seed(cfg.train.seed)
        controlnet = make_controlnet(unet, int(pipe.vae_scale_factor))
    finally:
        torch.set_rng_state(state)
    sched = train_scheduler_like(pipe.scheduler)
    T = sched.config.num_train_timesteps
    empty_ids = tokenize(tokenizer, [""])[0]

    def loss_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        batch = scene_images(cfg.train.batch, cfg.train.seed, step, size=size)
        control = control_tensor(edges_for(batch.images, gen, cfg))              # (B, 3, H, W) in [0, 1]
        with torch.no_grad():
            z0 = encode_scaled(vae, batch.images, gen)                          # (B, 4, h, w)
            ids = drop_captions(tokenize(tokenizer, batch.captions), empty_ids, cfg.caption_dropout, gen)
            hidden = text_encoder(ids)[0]                                       # (B, 77, d)
        t = torch.randint(0, T, (len(z0),), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        z_t = sched.add_noise(z0, noise, t)
        target = training_target(sched, z0, noise, t)
        return F.mse_loss(controlled_eps(unet, controlnet, z_t, t, hidden, control), target), {}

    monitor_batch = _monitor_batch(cfg, vae, text_encoder, tokenizer, sched, size)
    plain = _monitor_loss(unet, None, monitor_batch)

    def monitor(ema: dict[str, torch.nn.Module]) -> dict[str, float]:
        return {"val_loss_control": _monitor_loss(unet, ema["controlnet"], monitor_batch), "val_loss_plain": plain}

    t0 = time.perf_counter()
    out = finetune(NAME, {"controlnet": controlnet}, loss_fn, cfg.train, resume_path, progress=progress,
                   stop_after=stop_after, monitor=monitor, monitor_every=cfg.monitor_every,
                   origin={"base_weights": base_weights_hash(pipe)})
    if out is None:
        return {"name": NAME, "interrupted_at": {"steps_this_run": stop_after}}
    return _finish(cfg, out, base, out_dir, pipe, preset, time.perf_counter() - t0)


@torch.no_grad()
def _monitor_batch(cfg: ControlNetTrainConfig, vae: Any, text_encoder: Any, tokenizer: Any, sched: Any,
                   size: int) -> dict[str, torch.Tensor]:
    """Fixed ``split="val"`` scenes with fixed t and ε (a low-variance curve), captions kept."""
    from ..data import scenes

    gen = torch.Generator().manual_seed(cfg.train.seed + 4242)
    batch = scenes.render_dataset(cfg.monitor_items, seed=cfg.train.seed + 4242, size=size, split="val")
    z0 = encode_scaled(vae, batch.images)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    return {"z_t": sched.add_noise(z0, noise, t), "t": t, "target": training_target(sched, z0, noise, t),
            "hidden": text_encoder(tokenize(tokenizer, batch.captions))[0],
            "control": control_tensor(edges_for(batch.images, None, cfg))}


@torch.no_grad()
def _monitor_loss(unet: Any, controlnet: Any | None, b: dict[str, torch.Tensor], chunk: int = 64) -> float:
    total, n = 0.0, len(b["t"])
    for i in range(0, n, chunk):
        s = slice(i, i + chunk)
        eps = controlled_eps(unet, controlnet, b["z_t"][s], b["t"][s], b["hidden"][s], b["control"][s])
        total += float(F.mse_loss(eps, b["target"][s])) * len(b["t"][s])
    return total / n


def save_controlnet(controlnet: Any, folder: Path) -> None:
    """``save_pretrained`` (safetensors) into ``folder`` the way every pipeline folder is written
    (:func:`components.save_pipeline`: a temporary sibling, no file over 10 MB, other files kept)."""
    save_pipeline(controlnet, folder)


def _finish(cfg: ControlNetTrainConfig, out: dict[str, Any], base: Path, out_dir: Path, pipe: Any,
            preset_name: str, seconds: float) -> dict[str, Any]:
    ema = out["ema"]["controlnet"]
    save_controlnet(ema, out_dir)
    history = out["history"]
    write_history(out_dir / "history.csv", history)
    last = history[-1] if history else {}
    monitored = [r for r in history if "val_loss_control" in r]
    record = {
        "name": NAME, "preset": preset_name, "seed": cfg.train.seed, "torch_threads": torch.get_num_threads(),
        "steps": out["steps"], "batch": cfg.train.batch, "wall_minutes": out["wall_minutes"],
        "final_loss": last.get("loss"),
        "val_loss_control": monitored[-1]["val_loss_control"] if monitored else None,
        "val_loss_plain": monitored[-1]["val_loss_plain"] if monitored else None,
        "caption_dropout": cfg.caption_dropout, "params_controlnet": count_params(ema),
        "base": base.name, "base_weights": base_weights_hash(pipe),
    }
    ft = asdict(cfg.train)
    write_json(out_dir / "train_config.json", {**{k: v for k, v in asdict(cfg).items() if k != "train"},
                                               "train": ft, "preset": preset_name})
    write_json(out_dir / "training.json", record)
    write_controlnet_card(out_dir)
    return record


# ----------------------------------------------------------------------------- the model card

def write_controlnet_card(folder: Path, extra_sections: dict[str, str] | None = None) -> Path:
    """(Re)write ``folder/README.md`` from ``config.json`` (diffusers'), ``training.json`` and ``metrics.json``
    (the evaluation adds its figures there; ``extra_sections`` None: the sections made from them)."""
    training = read_json(folder / "training.json", {}) or {}
    tcfg = read_json(folder / "train_config.json", {}) or {}
    summary = (
        "A Canny-edge ControlNet (Zhang et al. 2023, arXiv:2302.05543) for our tiny Stable Diffusion "
        "`checkpoints/tiny_sd`: a trainable copy of its U-Net's encoder and middle block, fed the Canny edge "
        "map of a 64×64 image through a small convolutional embedding (64×64 → 16×16) and joined to the locked "
        "U-Net through zero-initialised 1×1 convolutions. "
        f"{training.get('params_controlnet', '?')} parameters. It is a standard diffusers `ControlNetModel` "
        "folder, like `lllyasviel/sd-controlnet-canny`:\n\n"
        "```python\n"
        "from diffusers import ControlNetModel, StableDiffusionControlNetPipeline\n"
        "cn = ControlNetModel.from_pretrained(\"checkpoints/tiny_sd_controlnet\")\n"
        "pipe = StableDiffusionControlNetPipeline.from_pretrained(\"checkpoints/tiny_sd\", controlnet=cn,\n"
        "                                                         safety_checker=None, requires_safety_checker=False)\n"
        "image = pipe(\"a red circle\", image=edges_rgb, controlnet_conditioning_scale=1.0).images[0]\n"
        "```\n\n"
        "The shipped weights are the EMA of the trained ones; the control image is white edges on black "
        "(`cv2.Canny` of the colour image, thresholds 100/200 by default)."
    )
    data = (
        "Synthetic captioned scenes from `playground/data/scenes.py`, `split=\"train\"` (held-out colour-shape "
        f"pairs never occur), {training.get('batch', '?')} fresh scenes per step for "
        f"{training.get('steps', '?')} steps; control = their Canny edges with thresholds drawn per image "
        f"(low in {tcfg.get('low_range', '?')}, high = low + {tcfg.get('gap_range', '?')}); "
        f"{int(100 * float(training.get('caption_dropout', 0.5)))}% of the captions replaced by \"\" as in the "
        "paper. The base U-Net, autoencoder and text encoder are frozen. The monitor's `val_loss_control` / "
        "`val_loss_plain` is the MSE against the base's target (v for tiny_sd) with / without the edges on "
        "fixed `split=\"val\"` scenes."
    )
    if extra_sections is None:                 # the figures of the last evaluation, if any
        from .controlnet_evaluate import card_sections

        extra_sections = card_sections(read_json(folder / "metrics.json", {}) or {})
    sections = {"Resume state": RESUME_NOTE, "Sizing": SIZING_NOTE, **extra_sections}
    return write_card(folder, title="tiny_sd_controlnet — Canny ControlNet for tiny_sd", summary=summary,
                      command=COMMAND, data=data, extra_sections=sections, raw_metrics=False)


RESUME_NOTE = ("The resume state is `runs/tiny_sd_controlnet/controlnet.pt` (weights, EMA, optimiser, step), saved "
               "every 50 steps; `--no-resume` starts over. The base model must be the same `checkpoints/tiny_sd` "
               "(its weights' hash is `base_weights` in `training.json`).")
