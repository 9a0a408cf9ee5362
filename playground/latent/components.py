"""The parts of our tiny Stable Diffusion, as diffusers / transformers classes, and their pipeline folder.

Latent diffusion (LDM, Rombach et al. 2022) in four parts, exactly as in Stable Diffusion:

- the autoencoder ``AutoencoderKL``: encoder E and decoder D with x̃ = D(z) = D(E(x)) (LDM §3.1, a
  KL-regularised autoencoder). Ours maps a 64×64×3 image to a 16×16×4 latent (downsampling factor
  f = H/h = 4: three blocks = two downsamplings; SD: f = 8, 512×512×3 → 64×64×4). The latents are
  multiplied by ``scaling_factor`` = 1 / std(z) so the diffusion sees unit variance (SD's 0.18215;
  ours is measured on training scenes once the autoencoder is trained);
- the text encoder τ_θ(y): a small ``CLIPTextModel`` trained from scratch with the U-Net (SD 1.x uses
  CLIP ViT-L/14's, frozen); its last hidden states (77 × d) are the keys and values of cross-attention;
- the U-Net ε_θ(z_t, t, τ_θ(y)): ``UNet2DConditionModel``; each ``CrossAttn*`` block computes
  Attention(Q, K, V) = softmax(Q Kᵀ / √d) · V with Q = W_Q φ_i(z_t), K = W_K τ_θ(y), V = W_V τ_θ(y)
  (LDM §3.3), and the whole is trained on LDM eq. 3, ||ε − ε_θ(z_t, t, τ_θ(y))||² (with v for ε, below);
- the noise schedule: DDPM's linear β_t (1e-4 → 0.02), T = 1000 — *not* SD's "scaled_linear" (√β linear
  from √0.00085 to √0.012). SD's schedule ends at ᾱ_T = 0.0047: √ᾱ_T = 0.068 of the image is still there at
  t = T. On our 16×16 latents an object covers ~50 latent pixels, so its region mean keeps an SNR near 0.7 at
  t = T, and the network learned to read an object's colour and place from that residue instead of the
  prompt: sampled from pure noise, colour followed the seed (held-out colour accuracy 20%, chance 17%, after
  5,000 steps). The linear schedule ends at ᾱ_T = 4e-5 (√ᾱ_T = 0.0064): Lin et al. 2024, "Common Diffusion
  Noise Schedules and Sample Steps Are Flawed", on the same defect. T = 1000;
  q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I) (DDPM eq. 4);
- what the U-Net predicts: v = √ᾱ_t ε − √(1−ᾱ_t) z_0 (Salimans & Ho 2022, §4; SD 2.x does the same), not
  ε. The ε model still ignored the prompt at high noise: at t ≥ 800 its loss with the caption equalled its
  loss with "" (0.0021 vs 0.0022), because predicting ε there is nearly z_t itself whatever the scene, so
  the loss barely rewards knowing it — yet that is where colour, place and background are decided. The
  error on v is the ε error divided by ᾱ_t, so those steps count. 1,250 steps after the switch, held-out
  colour accuracy went from 19% to 50% and background from wrong to 100% (48 prompts). The folder ships a
  ``DPMSolverMultistepScheduler`` (DPM-Solver++, 2nd order) on those betas; any other diffusers scheduler
  swaps in with ``Scheduler.from_config(pipe.scheduler.config)``. The pipeline's guidance is CFG
  (Ho & Salimans 2022, eq. 6): ε̃ = ε_θ(z_t, ∅) + s·(ε_θ(z_t, y) − ε_θ(z_t, ∅)), s = 1 + w — the same
  combination of the v outputs, since ε̂ is an affine function of v̂ at a given z_t.

Sizing of ``tiny_sd`` — measured on this 2-core CPU (torch 2.14, CPU seconds, one thread; other
CPU-bound jobs were running, so two-thread wall times could not be measured cleanly):

=====================================================  ==============================================
U-Net (64, 64, 64), cross-attention at 16×16 and 8×8   2.20 M params, 8.8 MB; forward, batch 2: 23 ms
text encoder 128-d, 4 layers, 4 heads, 505 tokens      0.87 M params, 3.5 MB
autoencoder (16, 32, 64), f = 4                        0.68 M params, 2.7 MB; decode 1 image: 14 ms
one image: 25 DPM-Solver++ steps, CFG (batch 2)        0.64-0.68 CPU-s at 1 thread (product target ≤ 1 s)
train step U-Net + text encoder, batch 32              1.1-1.4 CPU-s (batch 64 ≈ 2.4 CPU-s)
train step autoencoder, batch 16                       ≈ 0.5 CPU-s
=====================================================  ==============================================

Rejected: U-Net (64, 128, 128) — 5.9 M params = 23.7 MB (over the 10 MB file limit, and a ControlNet copy
of it would be too), 0.88 s per image; (96, 192, 192) — about twice that. An autoencoder of (32, 64, 64)
channels trains at half the speed (1.1 CPU-s per step) for flat-coloured shapes that (16, 32, 64) can hold.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import (AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .vocab import MAX_LENGTH, build_tokenizer

MAX_FILE_BYTES = 10 * 1024 * 1024           # every committed file stays <= 10 MB (Spaces needs LFS above)
MAX_SHARD = "9MB"                           # a bigger model is saved in shards of at most this (10^6 bytes)
TRAIN_TIMESTEPS = 1000
SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}   # SD 1.x's
LATENT_SCHEDULE = {"beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}        # ours (see above)
PREDICTION_TYPE = "v_prediction"            # what our U-Net predicts (see above); SD 1.x: "epsilon", SD 2.x: v


@dataclass
class LatentConfig:
    """Hyper-parameters of the three networks. Image 64×64×3 ↔ latent 16×16×4 (f = 2^(len(vae_channels)-1))."""

    image_size: int = 64
    latent_channels: int = 4
    # autoencoder (KL-regularised, LDM §3.1)
    vae_channels: tuple[int, ...] = (16, 32, 64)          # 64×64, 32×32, 16×16
    vae_layers_per_block: int = 1                          # the decoder has one more per block (diffusers)
    vae_groups: int = 8
    vae_mid_attention: bool = True                         # self-attention in the 16×16 middle block
    # text encoder τ_θ (CLIP's transformer, causal, from scratch)
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_mlp: int = 512
    # U-Net ε_θ(z_t, t, τ_θ(y)) on 16×16×4 latents
    unet_channels: tuple[int, ...] = (64, 64, 64)          # 16×16, 8×8, 4×4
    unet_down_blocks: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
    unet_up_blocks: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    unet_layers_per_block: int = 1
    unet_heads: int = 4                                    # attention heads (head dim = channels / heads)
    unet_transformer_layers: tuple[int, ...] = ()          # transformer blocks per down level (the mid block
                                                           # takes the last, the up levels mirror); () = one each
    unet_groups: int = 32
    notes: str = ""

    def __post_init__(self) -> None:
        assert len(self.unet_down_blocks) == len(self.unet_up_blocks) == len(self.unet_channels), \
            "one down block and one up block per U-Net level"
        assert self.image_size % self.downsampling == 0, "image_size must be a multiple of the VAE factor"
        assert self.latent_size % 2 ** (len(self.unet_channels) - 1) == 0, "latent too small for the U-Net"
        assert all(c % self.vae_groups == 0 for c in self.vae_channels), "vae_groups must divide vae_channels"
        assert all(c % self.unet_groups == 0 for c in self.unet_channels), "unet_groups must divide unet_channels"
        assert self.text_hidden % self.text_heads == 0, "text_heads must divide text_hidden"

    @property
    def downsampling(self) -> int:
        """The autoencoder's factor f: each block but the last halves the side."""
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsampling

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CONFIGS: dict[str, LatentConfig] = {
    # The shipped model; measured figures in the module docstring.
    "tiny_sd": LatentConfig(notes="U-Net 64/64/64 at 16/8/4, cross-attention at 16×16 and 8×8; "
                                  "VAE 16/32/64 (f = 4); CLIP text encoder 128-d, 4 layers"),
    # As small as it gets, for unit tests: builds and runs a 2-step pipeline in a few tens of ms.
    "test": LatentConfig(vae_channels=(8, 8, 8), vae_groups=4, vae_mid_attention=False,
                         text_hidden=16, text_layers=1, text_heads=2, text_mlp=32,
                         unet_channels=(8, 16, 16), unet_heads=2, unet_groups=4, notes="unit tests only"),
}


def get_config(name: str, **overrides: Any) -> LatentConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown latent config {name!r}; choose from {sorted(CONFIGS)}")
    return replace(CONFIGS[name], **overrides)


# ----------------------------------------------------------------------------- building

def build_vae(cfg: LatentConfig, scaling_factor: float = 1.0) -> AutoencoderKL:
    """E: 3×64×64 → 2·4×16×16 (mean and log-variance of q(z|x)), D: 4×16×16 → 3×64×64."""
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels,
                         layers_per_block=cfg.vae_layers_per_block, latent_channels=cfg.latent_channels,
                         norm_num_groups=cfg.vae_groups, sample_size=cfg.image_size,
                         scaling_factor=scaling_factor, mid_block_add_attention=cfg.vae_mid_attention)


def build_text_encoder(cfg: LatentConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """τ_θ(y): CLIP's causal transformer over 77 tokens. bos/eos/pad ids match the tokenizer, so the pooled
    output (taken at the first <|endoftext|>) and the padding are those of real CLIP."""
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                            intermediate_size=cfg.text_mlp, num_hidden_layers=cfg.text_layers,
                            num_attention_heads=cfg.text_heads, max_position_embeddings=MAX_LENGTH,
                            projection_dim=cfg.text_hidden, hidden_act="quick_gelu",
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


def build_unet(cfg: LatentConfig) -> UNet2DConditionModel:
    """ε_θ(z_t, t, τ_θ(y)): 4×16×16 latents, cross-attention on the text encoder's hidden states."""
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, down_block_types=cfg.unet_down_blocks,
                                up_block_types=cfg.unet_up_blocks, block_out_channels=cfg.unet_channels,
                                layers_per_block=cfg.unet_layers_per_block, norm_num_groups=cfg.unet_groups,
                                cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.unet_heads,
                                transformer_layers_per_block=list(cfg.unet_transformer_layers) or 1)


@torch.no_grad()
def grow_transformer_layers(unet: UNet2DConditionModel, layers: tuple[int, ...], seed: int = 0) -> UNet2DConditionModel:
    """``unet`` deepened, computing exactly what it did: ``transformer_layers_per_block`` becomes ``layers`` (per down
    level; the mid block takes the last, the up levels mirror them, as diffusers builds SDXL's U-Net).

    Each new ``BasicTransformerBlock`` is appended after the existing ones of its attention, freshly initialised
    from ``seed`` but with the output projections of its three residual branches (self-attention, cross-attention,
    feed-forward) zeroed: h + 0 + 0 + 0 = h, the identity — Net2Net's function-preserving deepening (Chen et al.
    2016, §3.2), zero-initialised as ControlNet's zero convolutions are (Zhang et al. 2023, eq. 2). The gradient
    reaches the zeroed weights through their inputs, so training starts using the new blocks at once."""
    from diffusers.models.attention import BasicTransformerBlock

    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    old = config.get("transformer_layers_per_block", 1)
    old = [old] * len(layers) if isinstance(old, int) else list(old)
    if len(layers) != len(old) or any(n < o for n, o in zip(layers, old)):
        raise ValueError(f"transformer layers {tuple(layers)} must keep each of {tuple(old)} and add to them")
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        grown = UNet2DConditionModel.from_config({**config, "transformer_layers_per_block": list(layers)})
    finally:
        torch.set_rng_state(state)
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    new_blocks = {name for name, m in grown.named_modules() if isinstance(m, BasicTransformerBlock)
                  and any(k.startswith(name + ".") for k in missing)}
    if unexpected or any(not any(k.startswith(b + ".") for b in new_blocks) for k in missing):
        raise ValueError(f"growing changed more than the transformer blocks: {sorted(unexpected)[:3]} "
                         f"{sorted(missing)[:3]}")
    for name in new_blocks:
        block = grown.get_submodule(name)
        outs = [block.attn1.to_out[0], block.attn2.to_out[0],
                [m for m in block.ff.net if isinstance(m, torch.nn.Linear)][-1]]
        for linear in outs:
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
    return grown.train(unet.training).to(next(unet.parameters()).device)


def _widened(old: torch.Tensor, new_shape: torch.Size, split: float, gen: torch.Generator) -> torch.Tensor:
    """``old`` mapped onto ``new_shape`` axis by axis. An axis that doubled holds each old channel twice,
    side by side (channel j -> 2j, 2j + 1); one that grew by less is a concatenation [widened part, unchanged
    part] (an up block's input: the widened path, then a skip from the unwidened level). On axis 1 (the inputs
    of a convolution or linear map) each weight w of a doubled input is split into r·w and (1 − r)·w, with r drawn
    per weight from U(0.5 − split, 0.5 + split): the two copies of an input are equal, so the sum is unchanged."""
    out = old
    for axis, (o, n) in enumerate(zip(old.shape, new_shape)):
        if n == o:
            continue
        if not o < n <= 2 * o:
            raise ValueError(f"cannot widen an axis of {o} to {n}")
        a = n - o                                   # old channels that get a copy (the first a of them)
        head, tail = out.narrow(axis, 0, a), out.narrow(axis, a, o - a)
        head = head.repeat_interleave(2, dim=axis)
        if axis == 1:
            r = 0.5 + split * (2 * torch.rand(head.narrow(1, 0, a).shape, generator=gen) - 1)
            shares = torch.stack([r, 1 - r], dim=2).flatten(1, 2)      # r, 1 − r for the copies 2j, 2j + 1
            head = head * shares
        out = torch.cat([head, tail], dim=axis)
    return out


def widen_unet(unet: UNet2DConditionModel, channels: tuple[int, ...], split: float = 0.25,
               seed: int = 0) -> UNet2DConditionModel:
    """``unet`` with ``block_out_channels`` widened to ``channels`` (each level kept or doubled), computing what
    it did: Net2Net's function-preserving widening (Chen et al. 2016, §3.1, "Net2WiderNet"). Every channel of a
    widened level is split into two equal copies: a layer's outgoing weights are copied, and each weight of the
    next layer that reads the channel is shared between its two copies, so each sum is unchanged.

    The copies sit side by side (j -> 2j, 2j + 1), so with the same number of groups each GroupNorm group holds
    the copies of exactly one old group (same mean and variance), each attention head the copies of one old
    head, and a LayerNorm over all channels sees the same statistics. A head's width doubles, so its dot
    products double while softmax divides by √d only √2 more: the queries are scaled by 1/√2. A residual block
    that now changes width gets a 1×1 shortcut that copies each channel (the identity it had). Exact but for
    the GroupNorms of the two up-path blocks whose input joins a widened path to a skip from an unwidened level:
    their groups can no longer align with the old ones (a small change that training absorbs).
    Copies that were also read with equal weights would get equal gradients and stay equal for ever (so would
    copies parted by a little noise, as the paper suggests: measured, under AdamW their difference shrank from
    1% to 0.7% in 3,200 steps). So each reading weight w is shared as r·w and (1 − r)·w, r drawn per weight from
    U(0.5 − ``split``, 0.5 + ``split``) (``seed``): the copies still compute the same, but their gradients point
    different ways from the first step (``split=0`` halves every weight)."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    old = list(config["block_out_channels"])
    if not 0.0 <= split < 0.5:
        raise ValueError(f"split must be in [0, 0.5), got {split}")
    if len(channels) != len(old) or any(n not in (o, 2 * o) for n, o in zip(channels, old)):
        raise ValueError(f"channels {tuple(channels)} must keep or double each of {tuple(old)}")
    wide = UNet2DConditionModel.from_config({**config, "block_out_channels": list(channels)})
    old_state = unet.state_dict()
    new_state = {}
    gen = torch.Generator().manual_seed(seed)
    for name, target in wide.state_dict().items():
        if name in old_state:
            w = _widened(old_state[name], target.shape, split, gen)
            if name.endswith(("attn1.to_q.weight", "attn2.to_q.weight", "attn1.to_q.bias", "attn2.to_q.bias")) \
                    and target.shape[0] == 2 * old_state[name].shape[0]:
                w = w / 2 ** 0.5
            new_state[name] = w
        elif name.endswith("conv_shortcut.weight"):   # now in != out: copy each input channel to its two outputs
            w = torch.zeros_like(target)
            n_out, n_in = target.shape[:2]
            if n_out != 2 * n_in:
                raise ValueError(f"{name}: a new shortcut must double its channels, got {n_in} -> {n_out}")
            w[torch.arange(n_out), torch.arange(n_out) // 2] = 1.0
            new_state[name] = w
        elif name.endswith("conv_shortcut.bias"):
            new_state[name] = torch.zeros_like(target)
        else:
            raise ValueError(f"widening has no rule for {name}")
    wide.load_state_dict(new_state)
    return wide.train(unet.training).to(next(unet.parameters()).device)


def noise_schedule_config(schedule: dict[str, Any] | None = None,
                          prediction_type: str = PREDICTION_TYPE) -> dict[str, Any]:
    """The training schedule's diffusers config: ours (:data:`LATENT_SCHEDULE`, linear β 1e-4 → 0.02) unless
    ``schedule`` names another (:data:`SD_SCHEDULE`), T = 1000, and what the U-Net predicts."""
    return {"num_train_timesteps": TRAIN_TIMESTEPS, **(schedule or LATENT_SCHEDULE), "prediction_type": prediction_type}


def build_train_scheduler(schedule: dict[str, Any] | None = None,
                          prediction_type: str = PREDICTION_TYPE) -> DDPMScheduler:
    """The forward process q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I) used in training (``add_noise``)."""
    return DDPMScheduler(**noise_schedule_config(schedule, prediction_type), clip_sample=False)


def train_scheduler_like(scheduler: Any) -> DDPMScheduler:
    """The forward process of a pipeline's own schedule (betas, T and prediction type from its scheduler's
    config), for fine-tuning on top of it."""
    return DDPMScheduler.from_config(scheduler.config, clip_sample=False)


def training_target(sched: Any, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the U-Net learns to output at z_t = √ᾱ_t z_0 + √(1−ᾱ_t) ε, as ``sched.config.prediction_type``
    says: ε (DDPM eq. 14, LDM eq. 3) or v = √ᾱ_t ε − √(1−ᾱ_t) z_0 (Salimans & Ho 2022, "Progressive
    Distillation", §4; Stable Diffusion 2.x). The squared error on v equals the ε error divided by ᾱ_t, so
    high noise levels — where colour, place and background are decided — weigh far more than with ε."""
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return sched.get_velocity(z0, noise, t)
    raise ValueError(f"unsupported prediction type {kind!r}")


def build_scheduler() -> DPMSolverMultistepScheduler:
    """The sampler shipped in the folder: DPM-Solver++ (2nd order, multistep) on the training betas."""
    return DPMSolverMultistepScheduler(**noise_schedule_config(), algorithm_type="dpmsolver++", solver_order=2,
                                       steps_offset=1)


def build_components(cfg: LatentConfig, seed: int = 0) -> dict[str, Any]:
    """Randomly initialised parts (from ``seed``; the global RNG is restored afterwards)."""
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        tokenizer = build_tokenizer()
        return {"vae": build_vae(cfg), "text_encoder": build_text_encoder(cfg, tokenizer), "tokenizer": tokenizer,
                "unet": build_unet(cfg), "scheduler": build_scheduler()}
    finally:
        torch.set_rng_state(state)


def assemble_pipeline(components: dict[str, Any]) -> StableDiffusionPipeline:
    """The standard ``StableDiffusionPipeline`` around our parts (no safety checker: synthetic scenes)."""
    parts = {k: components[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    for k in ("vae", "text_encoder", "unet"):
        parts[k].eval()
    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- files

def _check_sizes(folder: Path) -> None:
    big = [(p, p.stat().st_size) for p in folder.rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
    if big:
        raise ValueError("files over 10 MB: " + ", ".join(f"{p.name} ({s / 2**20:.1f} MB)" for p, s in big))


def save_pipeline(pipe: Any, folder: Path) -> None:
    """``save_pretrained`` (safetensors) of a pipeline — or of one model, e.g. a ``ControlNetModel`` — into
    ``folder``, a model over :data:`MAX_SHARD` in several files (``from_pretrained`` reads them back through
    their index), refusing any file over 10 MB.

    The pipeline is written to a temporary sibling first and its parts are then moved in, so other files
    of the folder (``training.json``, ``README.md``, …) stay and a refused or interrupted save leaves the
    previous pipeline intact."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True, max_shard_size=MAX_SHARD)
        _check_sizes(tmp)
        for config in tmp.rglob("config.json"):      # where the weights were loaded from: not part of the model
            data = json.loads(config.read_text())
            if data.pop("_name_or_path", None) is not None:
                config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        for item in sorted(tmp.iterdir()):
            target = folder / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def random_pipeline(folder: Path, preset: str = "test", seed: int = 0) -> Path:
    """Write a randomly initialised pipeline folder of ``CONFIGS[preset]`` (for tests of code that loads
    one: ``StableDiffusionPipeline.from_pretrained(folder)`` works with no network)."""
    pipe = assemble_pipeline(build_components(get_config(preset), seed=seed))
    save_pipeline(pipe, Path(folder))
    return Path(folder)


def load_pipeline(folder: Path, device: str | torch.device = "cpu") -> StableDiffusionPipeline:
    """Load a saved pipeline folder (local files only, safetensors only), in eval mode on ``device``."""
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, use_safetensors=True,
                                                   local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
