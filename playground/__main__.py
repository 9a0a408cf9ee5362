"""Command line: ``python -m playground {train,sample,evaluate,bench,deploy} ...`` (each has ``--help``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.presets import PRESETS
from .core.settings import get_settings

VAE_MODELS = ("ae", "vae2", "vae20", "bvae20", "convvae")
GAN_MODELS = ("gan_mlp", "gan_dcgan", "gan_wgan", "gan_wgangp", "gan_cgan")
DIFFUSION_MODELS = ("diffusion_unet", "diffusion_dit")
LATENT_MODELS = ("tiny_sd",)
ADDON_MODELS = ("tiny_sd_inpaint", "tiny_sd_controlnet")   # fine-tuned on top of tiny_sd
ALL_TRAINABLE = ("classifier", *VAE_MODELS, *GAN_MODELS, *DIFFUSION_MODELS)


def _evaluate(name: str, ckpt: Path) -> dict:
    """Measure one checkpoint's figures and rewrite its model card."""
    if name == "classifier":
        from .eval.report import evaluate_classifier_and_card

        return evaluate_classifier_and_card(ckpt)
    if name in ("inpaint", "tiny_sd_inpaint"):
        from .latent.inpaint_evaluate import evaluate_and_card as inpaint_card

        return inpaint_card(ckpt)
    if name in ("controlnet", "tiny_sd_controlnet"):
        from .latent.controlnet_evaluate import evaluate_and_card as controlnet_card

        return controlnet_card(ckpt)
    if name in ("txt2img", *LATENT_MODELS):
        from .latent.evaluate import evaluate_and_card as txt2img_card

        return txt2img_card(ckpt)
    if name in DIFFUSION_MODELS:
        from .diffusion.report import evaluate_and_card as diffusion_card

        return diffusion_card(name, ckpt)
    if name in GAN_MODELS:
        from .gan.report import evaluate_and_card as gan_card

        return gan_card(name, ckpt)
    from .vae.report import evaluate_and_card

    return evaluate_and_card(name, ckpt)


def cmd_train(args: argparse.Namespace) -> int:
    ckpt = Path(args.checkpoints) if args.checkpoints else get_settings().checkpoints_dir
    names = ALL_TRAINABLE if args.model == "all" else (args.model,)
    if (args.stage4_from or args.continue_from) and args.model not in LATENT_MODELS:
        print("--stage4-from and --continue-from are for tiny_sd only", file=sys.stderr)
        return 2
    if args.stage4_from and args.continue_from:
        print("give --stage4-from or --continue-from, not both", file=sys.stderr)
        return 2
    if args.model in LATENT_MODELS:
        return _train_latent(args, ckpt)
    if args.model in ADDON_MODELS:
        return _train_addon(args, ckpt)
    for name in names:
        overrides = {k: v for k, v in {"epochs": args.epochs, "seed": args.seed,
                                       "batch_size": args.batch_size}.items() if v is not None}
        if name == "classifier":
            from .eval.classifier import train_classifier

            kw = {k: v for k, v in overrides.items() if k in ("epochs", "seed", "batch_size")}
            record = train_classifier(ckpt / "classifier", resume=not args.no_resume, **kw)
        elif name in DIFFUSION_MODELS:
            from .diffusion.train import preset as diffusion_preset
            from .diffusion.train import train as diffusion_train

            if args.lr is not None:
                overrides["lr"] = args.lr
            record = diffusion_train(name, diffusion_preset(name, **overrides), out_dir=ckpt / name,
                                     resume=not args.no_resume)
        elif name in GAN_MODELS:
            from .gan.train import preset as gan_preset
            from .gan.train import train as gan_train

            if args.lr is not None:
                overrides.update(lr_g=args.lr, lr_d=args.lr)
            record = gan_train(name, gan_preset(name, **overrides), out_dir=ckpt / name, resume=not args.no_resume)
        else:
            from .vae.train import preset, train

            if args.lr is not None:
                overrides["lr"] = args.lr
            record = train(name, preset(name, **overrides), out_dir=ckpt / name, resume=not args.no_resume)
        print(json.dumps(record))
        if "interrupted_at_epoch" in record:
            continue
        if name != "convvae" and not (ckpt / "classifier" / "model.safetensors").exists():
            print("no classifier yet: run `python -m playground train classifier`, then "
                  f"`python -m playground evaluate {name}` for the model card's figures", file=sys.stderr)
            continue
        print(json.dumps(_evaluate(name, ckpt), default=str))
    return 0


def _train_latent(args: argparse.Namespace, ckpt: Path) -> int:
    """``train tiny_sd``: both stages of our tiny Stable Diffusion (see ``playground.latent.train``)."""
    from .latent.train import preset as latent_preset
    from .latent.train import train as latent_train

    overrides = {k: v for k, v in {"seed": args.seed, "unet_batch": args.batch_size,
                                   "unet_lr": args.lr}.items() if v is not None}
    if args.epochs is not None:
        print("tiny_sd counts steps, not epochs: --epochs is ignored", file=sys.stderr)
    if args.stage4_from:
        from .latent.train import train_stage4_from

        record = train_stage4_from(Path(args.stage4_from), latent_preset(args.model, **overrides),
                                   out_dir=ckpt / args.model, resume=not args.no_resume)
    elif args.continue_from:
        from .latent.train import train_continue_from

        record = train_continue_from(Path(args.continue_from), latent_preset(args.model, **overrides),
                                     out_dir=ckpt / args.model, resume=not args.no_resume)
    else:
        record = latent_train(args.model, latent_preset(args.model, **overrides), out_dir=ckpt / args.model,
                              resume=not args.no_resume)
    print(json.dumps(record))
    if "interrupted_at" not in record:
        print("next: `python -m playground evaluate txt2img` for the model card's figures", file=sys.stderr)
    return 0


def _train_addon(args: argparse.Namespace, ckpt: Path) -> int:
    """``train tiny_sd_inpaint`` / ``tiny_sd_controlnet``: fine-tuned from ``checkpoints/tiny_sd``."""
    if args.model == "tiny_sd_inpaint":
        from .latent.inpaint_train import train as addon_train
        what = "inpaint"
    else:
        from .latent.controlnet_train import train as addon_train
        what = "controlnet"
    for flag in ("epochs", "lr", "batch_size", "seed"):
        if getattr(args, flag) is not None:
            print(f"{args.model}: --{flag.replace('_', '-')} is not used (the preset fixes it)", file=sys.stderr)
    record = addon_train(out_dir=ckpt / args.model, base=ckpt / "tiny_sd", resume=not args.no_resume)
    print(json.dumps(record, default=str))
    if "interrupted_at" not in record:
        print(f"next: `python -m playground evaluate {what}` for the model card's figures", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .core.images import make_grid, pil_to_tensor, png_info, to_pil, upscale, with_params
    from .vae.service import VAEService

    images = VAEService().sample(args.n, args.seed, args.model)
    grid = upscale(to_pil(make_grid(torch.stack([pil_to_tensor(im) for im in images]))), args.scale)
    grid = with_params(grid, {"model": args.model, "n": args.n, "seed": args.seed}, unique=False)
    grid.save(args.out, pnginfo=png_info(grid))
    print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt = Path(args.checkpoints) if args.checkpoints else get_settings().checkpoints_dir
    targets = {"all": (*ALL_TRAINABLE, *LATENT_MODELS, *ADDON_MODELS), "vae": VAE_MODELS, "gan": GAN_MODELS,
               "diffusion": DIFFUSION_MODELS, "txt2img": LATENT_MODELS, "inpaint": ("tiny_sd_inpaint",),
               "controlnet": ("tiny_sd_controlnet",)}.get(args.what, (args.what,))
    results = {}
    for name in targets:
        if not any((ckpt / name / f).exists() for f in ("config.json", "model_index.json")):
            print(f"skipping {name}: no checkpoint (python -m playground train {name})", file=sys.stderr)
            continue
        results[name] = _evaluate(name, ckpt)
        print(f"{name}: " + json.dumps(results[name], default=str), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    out = run_bench(quick=args.quick, calls=args.calls, only=args.only)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy

    return deploy(args.space_id, preset=args.preset, hardware=args.hardware, private=args.private,
                  dry_run=args.dry_run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m playground", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a built-in model into checkpoints/<name> (resumable)")
    t.add_argument("model", choices=(*ALL_TRAINABLE, *LATENT_MODELS, *ADDON_MODELS, "all"),
                   help="which model ('all' = every one, in order; tiny_sd and the models fine-tuned from it "
                        "(tiny_sd_inpaint, tiny_sd_controlnet) are trained on their own)")
    t.add_argument("--epochs", type=int, help="override the preset's epoch budget")
    t.add_argument("--seed", type=int, help="training seed (default 0; same seed -> same weights)")
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--batch-size", type=int, help="batch size")
    t.add_argument("--no-resume", action="store_true", help="start from scratch even if runs/<name>/last.pt exists")
    t.add_argument("--checkpoints", help="output root (default: PLAYGROUND_CHECKPOINTS or ./checkpoints)")
    t.add_argument("--stage4-from", metavar="DIR",
                   help="tiny_sd only: run stage 4 (the decoder on the guided U-Net's latents) alone, on the pipeline "
                        "folder DIR as stages 1-3 left it, instead of replaying every stage")
    t.add_argument("--continue-from", metavar="DIR",
                   help="tiny_sd only: continue stage 2 from the pipeline folder DIR (at a step where the preset "
                        "restarts from the EMA weights; at the preset's refine_at, stage 5 refines the autoencoder "
                        "first) to the preset's next stop (refine_at, continue_at, unet_steps), then run stage 4")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="write a grid of prior samples to a PNG")
    s.add_argument("model", choices=("ae", "vae2", "vae20", "bvae20"))
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling factor")
    s.add_argument("--out", default="samples.png")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="measure the figures in the model cards (and rewrite the cards)")
    e.add_argument("what", nargs="?", default="all",
                   choices=("all", "vae", "gan", "diffusion", "txt2img", "inpaint", "controlnet", *ALL_TRAINABLE,
                            *LATENT_MODELS, *ADDON_MODELS))
    e.add_argument("--checkpoints", help="checkpoint root")
    e.add_argument("--json", help="also write the results to this file")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="latency, cold start and memory figures")
    b.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    b.add_argument("--calls", type=int, default=60, help="API calls per endpoint")
    b.add_argument("--json", help="also write the results to this file")
    b.add_argument("--only", choices=("latent", "hub"),
                   help="latent: only the text-to-image family's served latencies (/txt2img, /canny vs a no-op image "
                        "endpoint); hub: tiny SD 1.5- and SDXL-style sets configured as on a GPU Space (cold start vs "
                        "the CPU app, every endpoint, peak memory)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("deploy", help="publish this checkout as a Hugging Face Space (one commit through the Hub's "
                                      "client; runs/, caches and untracked files are left out)")
    d.add_argument("space_id", help="the Space, USER/NAME (created if missing)")
    d.add_argument("--preset", choices=tuple(PRESETS), help="serve a real model family on a GPU: sets the Space "
                                                            "variable PLAYGROUND_PRESET and preloads its weights")
    d.add_argument("--hardware", help="request this hardware (e.g. zero-a10g, a10g-small); default: leave it as "
                                      "is (the header suggests cpu-basic, or zero-a10g with a preset)")
    d.add_argument("--private", action="store_true", help="create the Space private")
    d.add_argument("--dry-run", action="store_true", help="print the files, their size and the header; upload "
                                                          "nothing (works offline)")
    d.set_defaults(func=cmd_deploy)

    args = p.parse_args(argv)
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
