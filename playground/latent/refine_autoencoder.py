"""Stage 5 of ``python -m playground train tiny_sd``: the whole autoencoder, encoder included, fine-tuned with
stage 4's colour and hue terms; then the latent pool is encoded again and stage 2 goes on from its EMA weights.

Why. Stages 3 and 4 changed the decoder only, to keep the latent space that the U-Net was trained on. But the
encoder's latent itself kept some hues too close for any decoder: through stage 4's autoencoder, small red
triangles still came back +9.5° toward orange and small yellow ones −9.7° (400 selection-set scenes), and real
scenes read only 89.5-90.5% colour-right (the ceiling of every generated image's colour).
Fine-tuning the encoder with the decoder (no anchor) moved the latents very little — their mean squared
change was about 1% of their mean square — and took that ceiling to 97.5 / 97.0% (unseen / held-out captions).

What. The loss is stage 1's (LDM §3.1: |x − x̂|₁ + λ_edge |∇x − ∇x̂|₁ + λ_KL KL(q(z|x) ‖ N(0, I)) / pixels,
x̂ = D(z), z ~ q(z|x)) plus stage 4's colour and hue terms (:func:`.guided_decoder.colour_l1`,
:func:`.guided_decoder.hue_l1`), on fresh training scenes. It starts from the autoencoder at stage-2 step
``refine_at`` (after stages 3 and 4), and the U-Net then learns the slightly moved latent space in a warm restart
(:func:`.train.train_continue_from`), before stage 4 runs again on the new U-Net from this stage's decoder.

State: ``runs/tiny_sd/refine/refine_vae.pt`` (resumable; a state made from another autoencoder or with other
settings starts over).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.training import optimise
from .guided_decoder import colour_l1, hue_l1
from .train import (_autoencoder_stage, _val_reconstruction, lr_factor, scene_batch, step_generator,
                    vae_loss_and_reconstruction, weights_fingerprint)

STAGE = 5
SETTINGS = ("seed", "vae_batch", "vae_edge_weight", "vae_kl_weight", "decoder_warmup", "min_lr_factor", "grad_clip",
            "refine_steps", "refine_lr", "refine_colour_weight", "refine_hue_weight", "guided_colour_sigma",
            "guided_hue_sigma")                   # the config fields that stage 5 reads


def refine_loss(vae: torch.nn.Module, x: torch.Tensor, gen: torch.Generator, cfg: Any) -> tuple[torch.Tensor, dict]:
    """Stage 1's loss plus λ_colour |G_σ * (x − x̂)|₁ + λ_hue L_hue (module docstring), x in [-1, 1]."""
    loss, terms, x_hat = vae_loss_and_reconstruction(vae, x, gen, cfg.vae_kl_weight, cfg.vae_edge_weight)
    colour = colour_l1(x_hat, x, cfg.guided_colour_sigma)
    hue = hue_l1(x_hat, x, cfg.guided_hue_sigma)
    loss = loss + cfg.refine_colour_weight * colour + cfg.refine_hue_weight * hue
    return loss, {**terms, "colour_l1": float(colour.detach()), "hue_l1": float(hue.detach())}


def train_refined_autoencoder(cfg: Any, parts: dict[str, Any], runs_dir: Path, progress: bool,
                              budget: list[int | None]) -> dict | None:
    """Stage 5 on ``parts["vae"]`` (every parameter). Returns its record, or None when ``budget`` ran out; the
    fine-tuned autoencoder is left in ``parts["vae"]``."""
    vae = parts["vae"]
    vae.requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.refine_lr)
    settings = {"vae": weights_fingerprint(vae), **{k: getattr(cfg, k) for k in SETTINGS}}

    def one_step(step: int) -> dict[str, float]:
        vae.train()
        x = scene_batch(cfg.vae_batch, cfg.seed + 5, step, cfg.model.image_size)   # scenes no earlier stage drew
        loss, terms = refine_loss(vae, x, step_generator(cfg.seed, STAGE, step), cfg)
        optimise(opt, vae.parameters(), loss,
                 cfg.refine_lr * lr_factor(step, cfg.decoder_warmup, cfg.refine_steps, cfg.min_lr_factor), cfg.grad_clip)
        return {"loss": float(loss.detach()), **terms}

    def finish(step: int, elapsed: float, history: list) -> dict:
        vae.eval()
        return {"steps": step, "wall_minutes": round(elapsed / 60, 2), "history": history,
                "val_reconstruction": _val_reconstruction(cfg, vae)}

    record = _autoencoder_stage(cfg, STAGE, "tiny_sd 5/5 autoencoder with hue", runs_dir / "refine_vae.pt", "vae",
                                cfg.refine_steps, cfg.refine_max_minutes, vae.state_dict, vae.load_state_dict, opt,
                                one_step, finish, progress, budget, settings)
    vae.eval()
    return record


def refine_fields(record: dict, at: int) -> dict:
    """Stage 5's figures for ``training.json``."""
    val = record["val_reconstruction"]
    return {"refined_at_step": at, "refine_steps": record["steps"], "refine_wall_minutes": record["wall_minutes"],
            "refine_val_mse": val["mse"], "refine_val_psnr_db": val["psnr_db"]}
