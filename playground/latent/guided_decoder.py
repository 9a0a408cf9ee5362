"""Stage 4 of ``python -m playground train tiny_sd``: the decoder fine-tuned on the latents that the guided
U-Net itself draws, so that it decodes *generated* scenes as well as it decodes encoded ones.

Why. Stages 1 and 3 fit the decoder D to the encoder's latents E(x) only, but at sampling time D decodes
the U-Net's latents, which classifier-free guidance pushes off that set (Ho & Salimans 2022, eq. 6,
extrapolates past the conditional prediction; the generated latents spread 1.24-1.58× wider than the
encoder's). Measured before this stage (unseen captions, guidance 7.5, 25 DPM-Solver++ steps): 28 of the 38
objects whose colour read wrong were a *neighbouring* hue (yellow → orange, orange → red, purple → blue), the
hue of generated orange objects scattered ±10° about −5.8°, and the checker's bins are only 25-30° wide.

What. Pairs (z̃, x) where x is a fresh training scene and z̃ is what the shipped sampler makes of it:
SDEdit (Meng et al. 2022): z_{t_s} = √ᾱ_{t_s} E(x) + √(1 − ᾱ_{t_s}) ε, then the guided U-Net with x's caption
denoises it over the remaining DPM-Solver++ steps (strength s = t_s / T and guidance scale cycle over a
grid). Noised half-way or more, the U-Net redraws colour and edges itself, so z̃ carries the U-Net's own
drift while x still says what the scene is. The decoder then minimises, over a batch that mixes these
pairs with the frozen encoder's posterior samples of fresh scenes (which keep it a faithful decoder),

    |x − D(z)|₁ + λ_edge |∇x − ∇D(z)|₁ + λ_colour |G_σ * (x − D(z))|₁ + λ_hue L_hue

where G_σ is a Gaussian blur: the third term is the error in each region's mean colour, which decides the
hue that a viewer (and the scene checker) names, and which the pixel-wise L1 — dominated by edges — barely
weighs. The fourth (:func:`hue_l1`) is the same chroma error measured *relative to the target's chroma*:
chroma scales with HSV saturation × value, so a 10° hue shift of a dark red (S 0.7, V 0.62) moves its pixels
0.43× as far in RGB as the same shift of a full-bright one, and the absolute terms let the decoder pull dark
reds and dark yellows toward orange (measured on 400 real scenes through stage 3's autoencoder: small red
triangles +11.6°, small yellow ones −11.2° on average, against ±5° of jitter and 25-30° wide colour bins).
That is D ≈ E[x | z̃]: the decoder of the *generative* process, not of the encoder alone. The encoder,
the U-Net and the text encoder stay frozen, so every other part of the pipeline is unchanged.

The pairs are rendered once into ``runs/tiny_sd/guided_pairs.pt`` (resumable, chunk by chunk), the
fine-tune state into ``runs/tiny_sd/guided_decoder.pt``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.images import YCBCR_BT601
from ..core.training import load_resume, optimise, save_resume
from ..data import scenes
from .train import (DECODER_PARTS, _autoencoder_stage, _val_reconstruction, decoder_state, lr_factor,
                    reconstruction_terms, scene_batch, step_generator, to_model_range, weights_fingerprint)

STAGE = 4
SETTINGS = ("seed", "vae_batch", "vae_edge_weight", "decoder_warmup", "min_lr_factor", "grad_clip", "guided_decoder_steps",
            "guided_lr", "guided_share", "guided_colour_weight", "guided_colour_sigma", "guided_hue_weight",
            "guided_hue_sigma")                    # the config fields that stage 4's training (not its pairs) reads
HUE_CHROMA_FLOOR = 0.1       # |(Cb, Cr)| in [-1, 1] units below which a target pixel has no hue to keep (objects: ≥ 0.35)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (N, C, H, W) batch (σ in pixels, radius 3σ, reflected borders)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def colour_l1(x_hat: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """mean |G_σ * (x̂ − x)|: the error of the local mean colour (blur is linear, so one blur of the difference)."""
    return gaussian_blur(x_hat - x, sigma).abs().mean()


def hue_l1(x_hat: torch.Tensor, x: torch.Tensor, sigma: float, floor: float = HUE_CHROMA_FLOOR) -> torch.Tensor:
    """The chroma error relative to the target's chroma, over the target's coloured pixels:

        L_hue = Σ_p w_p |c(x̂)_p − c(x)_p|₁ / |c(x)_p|  /  Σ_p w_p,   w_p = [|c(x)_p| > floor]

    with c = the (Cb, Cr) rows of BT.601 applied to G_σ-blurred images in [-1, 1]. For a pixel whose chroma
    keeps its length, |Δc| / |c| ≈ 2 sin(Δh / 2) (times √2 at most, for the L1 norm): the hue error in radians,
    however dark or pale the colour. Achromatic pixels (backgrounds) carry no hue and are left out."""
    ycc = torch.tensor(YCBCR_BT601[1:], dtype=x.dtype, device=x.device)
    c_hat = torch.einsum("kc,nchw->nkhw", ycc, gaussian_blur(x_hat, sigma))
    c = torch.einsum("kc,nchw->nkhw", ycc, gaussian_blur(x, sigma))
    length = c.norm(dim=1, keepdim=True)
    w = (length > floor).to(x.dtype)
    err = (c_hat - c).abs().sum(1, keepdim=True) / length.clamp_min(floor)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def _chunk_setting(cfg: Any, chunk: int) -> tuple[float, float]:
    """(strength, guidance scale) of pair chunk ``chunk``: every strength with every scale, in turn."""
    strengths, scales = tuple(cfg.guided_strengths), tuple(cfg.guided_scales)
    return float(strengths[chunk % len(strengths)]), float(scales[(chunk // len(strengths)) % len(scales)])


def _pair_seed(seed: int, chunk: int) -> int:
    return (seed + 2) * 1_000_003 + chunk          # scenes that stages 1 and 3 never drew


def img2img_pipeline(parts: dict[str, Any]) -> Any:
    """The shipped sampler (the parts' DPM-Solver++ scheduler) as an image-to-image pipeline."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**{k: parts[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def pair_chunk(cfg: Any, pipe: Any, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of ``cfg.guided_pair_batch`` pairs: (decoder-space latents z̃ = z / scaling_factor, float32,
    and the scenes as uint8 (N, 3, H, W)). Deterministic for (seed, chunk)."""
    strength, scale = _chunk_setting(cfg, chunk)
    batch = scenes.render_dataset(cfg.guided_pair_batch, seed=_pair_seed(cfg.seed, chunk),
                                  size=cfg.model.image_size, split="train")
    gens = [torch.Generator().manual_seed(_pair_seed(cfg.seed, chunk) * 1000 + j) for j in range(len(batch))]
    out = pipe(prompt=batch.captions, image=batch.images, strength=strength, guidance_scale=scale,
               num_inference_steps=cfg.guided_sampler_steps, output_type="latent", generator=gens)
    z = out.images.float() / float(pipe.vae.config.scaling_factor)
    return z, (batch.images * 255).round().to(torch.uint8)


def pair_key(parts: dict[str, Any]) -> float:
    """A cheap identity of what the pairs depend on: the U-Net, the text encoder and the encoder."""
    return weights_fingerprint(parts["unet"], parts["text_encoder"], parts["vae"].encoder)


def build_guided_pairs(cfg: Any, parts: dict[str, Any], path: Path, progress: bool = True) -> dict[str, Any]:
    """All ``cfg.guided_pairs`` pairs (rounded up to whole chunks), resuming from ``path``; returns
    ``{"latents", "images", "seconds", "key"}`` (``key``: :func:`pair_key`; pairs of other weights are discarded)."""
    chunks = math.ceil(cfg.guided_pairs / cfg.guided_pair_batch)
    key = pair_key(parts)
    st = load_resume(path)
    if st is None or st.get("key") != key:             # none yet, or made by other weights: start over
        st = {"latents": [], "images": [], "seconds": 0.0, "key": key}
    pipe = img2img_pipeline(parts) if len(st["latents"]) < chunks else None
    bar = tqdm(total=chunks, initial=len(st["latents"]), desc="tiny_sd 4/4 guided latents", disable=not progress,
               dynamic_ncols=True)
    while len(st["latents"]) < chunks:
        t0 = time.perf_counter()
        z, x = pair_chunk(cfg, pipe, len(st["latents"]))
        st["latents"].append(z)
        st["images"].append(x)
        st["seconds"] += time.perf_counter() - t0
        save_resume(path, **st)
        bar.update(1)
    bar.close()
    return {"latents": torch.cat(st["latents"]), "images": torch.cat(st["images"]), "seconds": st["seconds"],
            "key": key}


def guided_decoder_loss(vae: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, edge_weight: float,
                        colour_weight: float, colour_sigma: float,
                        hue_weight: float = 0.0, hue_sigma: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 1's terms plus the colour and hue terms (module docstring) for decoder inputs ``z`` and targets
    ``x`` in [-1, 1]."""
    x_hat = vae.decode(z).sample
    loss, terms = reconstruction_terms(x_hat, x, edge_weight)
    colour = colour_l1(x_hat, x, colour_sigma)
    loss = loss + colour_weight * colour
    terms["colour_l1"] = float(colour.detach())
    if hue_weight:
        hue = hue_l1(x_hat, x, hue_sigma)
        loss = loss + hue_weight * hue
        terms["hue_l1"] = float(hue.detach())
    return loss, terms


def _batch(cfg: Any, vae: torch.nn.Module, pairs: dict[str, Any], step: int,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s decoder inputs and targets: ``guided_share`` of the batch from the pairs, the rest fresh
    scenes through the frozen encoder (posterior samples)."""
    n_pair = int(round(cfg.vae_batch * cfg.guided_share))
    idx = torch.randint(len(pairs["latents"]), (n_pair,), generator=gen)
    xs = [to_model_range(pairs["images"][idx].float() / 255.0)]
    zs = [pairs["latents"][idx]]
    if cfg.vae_batch > n_pair:
        x = scene_batch(cfg.vae_batch - n_pair, cfg.seed + 3, step, cfg.model.image_size)
        with torch.no_grad():
            zs.append(vae.encode(x).latent_dist.sample(generator=gen))
        xs.append(x)
    return torch.cat(zs), torch.cat(xs)


def train_guided_decoder(cfg: Any, parts: dict[str, Any], runs_dir: Path, progress: bool,
                         budget: list[int | None]) -> dict | None:
    """Stage 4 on ``parts`` (the shipped, i.e. EMA, U-Net and text encoder; the VAE with its ``scaling_factor``
    set). Returns its record, or None when ``budget`` ran out; the fine-tuned decoder is left in ``parts["vae"]``."""
    vae = parts["vae"]
    for module in ("unet", "text_encoder"):
        parts[module].requires_grad_(False).eval()
    vae.eval()
    pairs = build_guided_pairs(cfg, parts, runs_dir / "guided_pairs.pt", progress)
    params = [p for n, p in vae.named_parameters() if n.startswith(DECODER_PARTS)]
    opt = torch.optim.AdamW(params, lr=cfg.guided_lr)
    # what the result depends on: a saved state made from another decoder, other pairs or other settings is not resumed
    settings = {"decoder": weights_fingerprint(vae.post_quant_conv, vae.decoder), "pairs": pairs["key"],
                **{k: getattr(cfg, k) for k in SETTINGS}}

    def one_step(step: int) -> dict[str, float]:
        vae.train()
        gen = step_generator(cfg.seed, STAGE, step)
        z, x = _batch(cfg, vae, pairs, step, gen)
        loss, terms = guided_decoder_loss(vae, x, z, cfg.vae_edge_weight, cfg.guided_colour_weight,
                                          cfg.guided_colour_sigma, cfg.guided_hue_weight, cfg.guided_hue_sigma)
        optimise(opt, params, loss,
                 cfg.guided_lr * lr_factor(step, cfg.decoder_warmup, cfg.guided_decoder_steps, cfg.min_lr_factor),
                 cfg.grad_clip)
        return {"loss": float(loss.detach()), **terms}

    def finish(step: int, elapsed: float, history: list) -> dict:
        vae.eval()
        return {"steps": step, "wall_minutes": round(elapsed / 60, 2), "history": history,
                "pairs": len(pairs["latents"]), "pair_minutes": round(pairs["seconds"] / 60, 2),
                "val_reconstruction": _val_reconstruction(cfg, vae)}

    return _autoencoder_stage(cfg, STAGE, "tiny_sd 4/4 decoder on guided latents", runs_dir / "guided_decoder.pt",
                              "decoder", cfg.guided_decoder_steps, cfg.decoder_max_minutes, lambda: decoder_state(vae),
                              lambda w: vae.load_state_dict(w, strict=False), opt, one_step, finish, progress, budget,
                              settings)
