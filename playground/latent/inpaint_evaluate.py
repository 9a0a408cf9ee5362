"""How well each inpainting method changes one object of a held-out scene, and keeps everything else.

``python -m playground evaluate inpaint``:

- cases (:func:`edit_cases`): ``n`` held-out scenes (``split="test"``, distinct captions: every one holds a
  colour-shape pair never seen in training); in each, one object is picked and the mask is its ``box``
  grown by :data:`GROW` px; the prompt is the scene's own caption with that object's phrase replaced by
  the phrase of the same object (same size, same place) in a *different colour and a different shape* —
  the scene grammar's ``ObjectSpec.phrase`` and the caption written by ``scenes.sample_spec``, so the
  prompt is exactly what the training captions look like;
- each method inpaints every case through :class:`~playground.latent.inpaint.InpaintService` (25
  DPM-Solver++ steps, guidance 7.5, seed ``seed + i`` for case i with both methods, feather σ =
  :data:`BLUR` px), the result pasted back;
- judged by :mod:`playground.eval.scene_checker` on the result: the detected object whose centre lies in
  the mask must have the new colour (target ≥ 90 %) and the new shape (≥ 80 %); in two-object scenes the
  other object must still read with its own colour and shape; outside the mask (where the feathered mask
  is 0) the largest pixel difference from the input must be 0 (exact paste-back);
- ceiling: the edited scenes rendered exactly and read by the same checker (the checker's own error);
- speed: one 64×64 inpaint, 25 steps, CFG, through the service (median of 5 after a warm-up), at 1 and 2
  torch threads (target ≤ 1.5 s).

The pipeline's raw outputs are cached as PNGs under ``runs/inpaint_eval/<method>-<weights>-…/`` (the
paste-back and the checks are recomputed from them, cheaply), so a rerun or an interrupted run is cheap.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.settings import REPO_ROOT, Settings, get_settings
from ..data import scenes as S
from ..eval.scene_checker import DetectedObject, parse_caption, read_scene
from .inpaint import (METHOD_BLEND, METHOD_NINE, METHODS, NAME, InpaintService, box_mask, fit_mask, paste_back,
                      prepare_mask)

DEFAULT_CACHE = REPO_ROOT / "runs" / "inpaint_eval"
GROW = 3                 # px added around the object's box
BLUR = 1.0               # σ of the paste-back feather (px)
STEPS, GUIDANCE, SCHEDULER = 25, 7.5, "DPM++ 2M"
TARGETS = {"colour": 0.90, "shape": 0.80, "seconds": 1.5}
SLUGS = {METHOD_NINE: "nine_channel", METHOD_BLEND: "latent_blending"}
COLUMNS = ("colour", "shape", "both", "other_kept", "outside_max_diff", "seconds_per_image")


# ----------------------------------------------------------------------------- cases

@dataclass
class EditCase:
    index: int
    scene: S.SceneSpec                  # the original held-out scene
    edited: S.SceneSpec                 # the same scene with objects[target] changed
    target: int                         # which object is repainted
    prompt: str                         # the edited scene's caption
    mask: Image.Image                   # 0/255 L, the object's box grown by GROW px


def heldout_scenes(n: int, seed: int = 0) -> list[S.SceneSpec]:
    """``n`` distinct-caption ``split="test"`` scenes (:func:`playground.latent.evaluate.heldout_scenes`)."""
    from .evaluate import heldout_scenes as scenes_

    return scenes_(n, seed)


def edited_object(obj: S.ObjectSpec, colour: str, shape: str) -> S.ObjectSpec:
    """``obj`` in another colour and shape: same size, diameter and centre (so the same ``box``), the same
    hue offset from its colour's hue and the same saturation and value."""
    offset = (obj.hue - S.COLOURS[obj.colour] + 180.0) % 360.0 - 180.0
    return replace(obj, colour=colour, shape=shape, hue=(S.COLOURS[colour] + offset) % 360.0)


def edit_cases(n: int = 200, seed: int = 0, grow: int = GROW, size: int = 64) -> list[EditCase]:
    """One case per held-out scene: a random object, a random new (colour, shape) with both different
    from the object's and the pair not that of the scene's other object (so "A above B" stays
    unambiguous), the caption rewritten by swapping that object's phrase, the mask over its box."""
    rng = np.random.default_rng([seed, 4711])
    cases = []
    for i, spec in enumerate(heldout_scenes(n, seed)):
        k = int(rng.integers(len(spec.objects)))
        old = spec.objects[k]
        taken = {(o.colour, o.shape) for j, o in enumerate(spec.objects) if j != k}
        pairs = [(c, s) for c in S.COLOURS for s in S.SHAPES
                 if c != old.colour and s != old.shape and (c, s) not in taken]
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        new = edited_object(old, colour, shape)
        if spec.caption.count(old.phrase()) != 1:
            raise AssertionError(f"cannot locate {old.phrase()!r} in {spec.caption!r}")
        caption = spec.caption.replace(old.phrase(), new.phrase())
        parse_caption(caption)                                   # fails loudly if the grammar broke
        objects = list(spec.objects)
        objects[k] = new
        edited = replace(spec, objects=objects, caption=caption)
        cases.append(EditCase(i, spec, edited, k, caption, box_mask(old.box, size, grow)))
    return cases


# ----------------------------------------------------------------------------- judging

def _inside(mask: np.ndarray, obj: DetectedObject) -> bool:
    h, w = mask.shape
    x, y = int(min(max(obj.cx, 0), w - 1)), int(min(max(obj.cy, 0), h - 1))
    return bool(mask[y, x])


def judge(case: EditCase, result: Image.Image, original: Image.Image, soft: np.ndarray) -> dict[str, Any]:
    """The checks of one result: ``colour``/``shape`` (the largest detected object whose centre lies in
    the mask has the new colour / shape; ``heldout_pair``: the new pair is one of ``scenes.HELDOUT_PAIRS``),
    ``other_kept`` (two-object scenes: an object detected within
    GROW px of the other object's centre has its colour and shape; else None), ``outside_max_diff`` (the
    largest |result − input| over the pixels where the feathered mask is 0)."""
    reading = read_scene(result)
    mask = np.asarray(case.mask) > 0
    inside = [o for o in reading.objects if _inside(mask, o)]           # objects come largest first
    new = case.edited.objects[case.target]
    found = inside[0] if inside else None
    out: dict[str, Any] = {"colour": bool(found and found.colour == new.colour),
                           "shape": bool(found and found.shape == new.shape)}
    out["both"] = out["colour"] and out["shape"]
    out["heldout_pair"] = (new.colour, new.shape) in S.HELDOUT_PAIRS
    others = [o for j, o in enumerate(case.scene.objects) if j != case.target]
    if others:
        other = others[0]
        near = [o for o in reading.objects if not _inside(mask, o)
                and math.hypot(o.cx - other.cx, o.cy - other.cy) <= other.diameter_px / 2 + GROW]
        out["other_kept"] = bool(near and near[0].colour == other.colour and near[0].shape == other.shape)
    else:
        out["other_kept"] = None
    a, b = np.asarray(result.convert("RGB"), np.int16), np.asarray(original.convert("RGB"), np.int16)
    outside = soft == 0
    out["outside_max_diff"] = int(np.abs(a - b)[outside].max()) if outside.any() else 0
    out["outside_pixels"] = int(outside.sum())
    return out


def summarise(checks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fractions right (``other_kept`` over the two-object scenes only; ``both_when_new_pair_heldout`` over
    the cases whose new colour-shape pair never occurs in training), the worst outside difference."""
    def frac(key: str) -> float:
        vals = [c[key] for c in checks if c[key] is not None]
        return float(np.mean(vals)) if vals else float("nan")

    held = [c["both"] for c in checks if c.get("heldout_pair")]
    return {"n": len(checks), "colour": frac("colour"), "shape": frac("shape"), "both": frac("both"),
            "other_kept": frac("other_kept"), "n_two_objects": sum(c["other_kept"] is not None for c in checks),
            "both_when_new_pair_heldout": float(np.mean(held)) if held else float("nan"),
            "n_new_pair_heldout": len(held),
            "outside_max_diff": max((c["outside_max_diff"] for c in checks), default=0),
            "outside_pixels_checked": sum(c["outside_pixels"] for c in checks)}


# ----------------------------------------------------------------------------- running

def weights_key(service: InpaintService, method: str) -> str:
    """The identity of the weights a method runs (for the cache)."""
    from .evaluate import weights_hash

    m = service.nine_model() if method == METHOD_NINE else service.txt2img.model()
    return weights_hash(m.pipe)


def run_method(service: InpaintService, cases: Sequence[EditCase], method: str, seed: int = 0, steps: int = STEPS,
               guidance_scale: float = GUIDANCE, blur: float = BLUR, cache_dir: Path | None = DEFAULT_CACHE,
               progress: bool = True) -> dict[str, Any]:
    """Inpaint every case with ``method`` (case i with seed ``seed + i``) and judge it. Raw pipeline outputs
    are cached; results are re-pasted from them with :func:`paste_back` (and, for fresh ones, checked equal
    to the service's own result). Returns ``{"table": summarise(...), "checks": [...], "seconds"}`` where
    seconds is the generation time per image (including earlier, interrupted runs)."""
    folder = None
    meta = {"seconds": 0.0, "generated": 0}
    if cache_dir is not None:
        key = f"{SLUGS[method]}-{weights_key(service, method)}-s{steps}-g{guidance_scale:g}-seed{seed}-b{blur:g}"
        folder = Path(cache_dir) / key
        folder.mkdir(parents=True, exist_ok=True)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            pass
    checks = []
    for case in cases:
        original = S.render(case.scene)
        soft = prepare_mask(fit_mask(case.mask, original.width), blur, 0)
        digest = hashlib.sha1(case.prompt.encode()).hexdigest()[:10]
        path = folder / f"{case.index:04d}-{digest}.png" if folder is not None else None
        if path is not None and path.exists():
            raw = Image.open(path).convert("RGB")
        else:
            start = time.perf_counter()
            r = service.inpaint({"background": original, "layers": [], "composite": None}, case.prompt, "",
                                mask_blur=blur, padding=0, strength=1.0, steps=steps, guidance_scale=guidance_scale,
                                seed=seed + case.index, method=method, scheduler=SCHEDULER, mask=case.mask, dilate=0)
            meta["seconds"] = float(meta["seconds"]) + time.perf_counter() - start
            meta["generated"] = int(meta["generated"]) + 1
            raw = r["raw"]
            if not np.array_equal(np.asarray(paste_back(original, raw, soft)), np.asarray(r["result"])):
                raise AssertionError("the service's result differs from paste_back(input, raw, mask)")
            if path is not None:
                tmp = path.with_suffix(".tmp.png")
                raw.save(tmp)
                tmp.replace(path)
                (folder / "meta.json").write_text(json.dumps(meta))
            if progress and (case.index + 1) % 20 == 0:
                print(f"  {method}: {case.index + 1}/{len(cases)}, {meta['seconds']:.0f} s", file=sys.stderr,
                      flush=True)
        checks.append(judge(case, paste_back(original, raw, soft), original, soft))
    table = summarise(checks)
    per_image = float(meta["seconds"]) / max(1, int(meta["generated"]))
    table["seconds_per_image"] = per_image
    return {"table": table, "checks": checks, "seconds": per_image}


def reference(cases: Sequence[EditCase]) -> dict[str, Any]:
    """The ceiling: each edited scene rendered exactly and judged the same way (the old and the new object
    share their box, so the render differs from the input only inside the mask)."""
    checks = []
    for case in cases:
        original = S.render(case.scene)
        soft = prepare_mask(fit_mask(case.mask, original.width), 0, 0)
        checks.append(judge(case, S.render(case.edited), original, soft))
    table = summarise(checks)
    table["seconds_per_image"] = float("nan")
    return table


def evaluate(service: InpaintService, n: int = 200, seed: int = 0, methods: Sequence[str] = METHODS,
             steps: int = STEPS, guidance_scale: float = GUIDANCE, blur: float = BLUR,
             cache_dir: Path | None = DEFAULT_CACHE, progress: bool = True) -> dict[str, Any]:
    """Both methods on the same ``n`` held-out edits (same masks, prompts and seeds). Returns
    ``{"settings", "methods": {method: table}, "reference": table, "rows": [...]}``; a table holds the
    fractions ``colour``, ``shape``, ``both``, ``other_kept`` (two-object scenes), ``outside_max_diff``
    (largest outside-mask pixel difference over all cases; 0 = exact), ``seconds_per_image``, ``n``."""
    cases = edit_cases(n, seed)
    result: dict[str, Any] = {
        "settings": {"cases": len(cases), "seed": seed, "steps": steps, "guidance_scale": guidance_scale,
                     "scheduler": SCHEDULER, "mask": f"object box + {GROW} px", "feather_sigma_px": blur,
                     "split": "test", "torch_threads": torch.get_num_threads()},
        "methods": {}, "rows": [],
    }
    for method in methods:
        if progress:
            print(f"inpainting {len(cases)} held-out edits with {method}", file=sys.stderr, flush=True)
        out = run_method(service, cases, method, seed, steps, guidance_scale, blur, cache_dir, progress)
        result["methods"][method] = out["table"]
        result["rows"].append({"method": method, **{k: out["table"][k] for k in COLUMNS}})
    ref = reference(cases)
    result["reference"] = ref
    result["rows"].append({"method": "exact render (ceiling)", **{k: ref[k] for k in COLUMNS}})
    return result


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def markdown_table(result: dict[str, Any]) -> str:
    """One row per method (and the ceiling): colour, shape, both, other object kept, outside max diff, s/image."""
    n = result["settings"]["cases"]
    two = next(iter(result["methods"].values()), result["reference"])["n_two_objects"]
    heads = ["method", f"colour right (n={n})", f"shape right (n={n})", "colour and shape",
             f"other object kept (n={two})", "outside max pixel diff", "seconds / image"]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for row in result["rows"]:
        sec = row["seconds_per_image"]
        lines.append("| " + " | ".join([row["method"], _pct(row["colour"]), _pct(row["shape"]), _pct(row["both"]),
                                        _pct(row["other_kept"]), str(row["outside_max_diff"]),
                                        "–" if math.isnan(sec) else f"{sec:.2f}"]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- speed and the card

def speed(service: InpaintService, methods: Sequence[str] = METHODS, repeats: int = 5,
          threads: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """Median wall time of one ``service.inpaint`` (64×64, 25 DPM-Solver++ steps, guidance 7.5, a 20×20
    box mask) per method and torch thread count, after one warm-up call."""
    case = edit_cases(1, 12345)[0]
    image = S.render(case.scene)
    out: dict[str, Any] = {"steps": STEPS, "guidance_scale": GUIDANCE, "scheduler": SCHEDULER}
    before = torch.get_num_threads()
    try:
        for k in threads:
            torch.set_num_threads(k)
            for method in methods:
                def once(seed: int) -> float:
                    start = time.perf_counter()
                    service.inpaint({"background": image}, case.prompt, steps=STEPS, guidance_scale=GUIDANCE,
                                    seed=seed, method=method, mask=case.mask, mask_blur=BLUR)
                    return time.perf_counter() - start

                once(0)
                out[f"{SLUGS[method]}_seconds_{k}_thread{'s' if k > 1 else ''}"] = round(
                    statistics.median(once(s) for s in range(1, repeats + 1)), 3)
    finally:
        torch.set_num_threads(before)
    first = f"_seconds_{threads[0]}_thread{'s' if threads[0] > 1 else ''}"
    out["target_seconds"] = TARGETS["seconds"]
    out["target_met"] = all(out[f"{SLUGS[m]}{first}"] <= TARGETS["seconds"] for m in methods)
    return out


def _clean(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=float).replace("NaN", "null"))


def evaluate_and_card(checkpoints: Path, n: int = 200, seed: int = 0, do_speed: bool = True, progress: bool = True,
                      cache_dir: Path | None = DEFAULT_CACHE, settings: Settings | None = None) -> dict[str, Any]:
    """``python -m playground evaluate inpaint``: speed, then both methods on ``n`` held-out edits; writes
    ``checkpoints/tiny_sd_inpaint/metrics.json`` and rewrites its model card with the table. Only the
    built-in models are evaluated (Hub settings are ignored here)."""
    from ..core.checkpoint import read_json, write_json
    from ..core.registry import ModelRegistry
    from .inpaint_train import write_inpaint_card
    from .service import Txt2ImgService

    checkpoints = Path(checkpoints)
    base = settings or get_settings()
    settings = replace(base, checkpoints_dir=checkpoints, txt2img_model="", inpaint_model="", device="cpu")
    txt2img = Txt2ImgService(settings, registry=ModelRegistry())
    service = InpaintService(txt2img)
    folder = checkpoints / NAME
    if not service.builtin_present():
        raise FileNotFoundError(f"no {folder}: python -m playground train {NAME}")
    metrics: dict[str, Any] = read_json(folder / "metrics.json", {}) or {}
    if do_speed:
        metrics["speed"] = speed(service)
        write_json(folder / "metrics.json", _clean(metrics))
    result = evaluate(service, n, seed, METHODS, cache_dir=cache_dir, progress=progress)
    metrics["settings"] = result["settings"]
    for method, table in result["methods"].items():
        metrics[SLUGS[method]] = table
    metrics["reference_exact_render"] = result["reference"]
    nine, blend = result["methods"][METHOD_NINE], result["methods"][METHOD_BLEND]
    metrics["targets"] = {
        "outside_max_diff_is_0": all(t["outside_max_diff"] == 0 for t in result["methods"].values()),
        "nine_channel_colour_at_least_0.9": nine["colour"] >= TARGETS["colour"],
        "nine_channel_shape_at_least_0.8": nine["shape"] >= TARGETS["shape"],
        "nine_channel_beats_blending": nine["colour"] > blend["colour"] and nine["shape"] > blend["shape"],
    }
    write_json(folder / "metrics.json", _clean(metrics))
    sections = {"Inpainting held-out scenes": EVAL_NOTE + "\n\n" + markdown_table(result)}
    write_inpaint_card(folder, sections)
    return _clean(metrics)


EVAL_NOTE = ("Each case is a `split=\"test\"` scene (it holds a colour-shape pair never seen in training). One object "
             f"is masked (its box grown by {GROW} px) and the prompt is the scene's caption with that object "
             "changed to a different colour *and* a different shape (same size and place). Both methods run on the "
             f"same cases with the same seeds ({STEPS} DPM-Solver++ steps, guidance {GUIDANCE}, feather "
             f"σ = {BLUR:g} px), "
             "results pasted back. `playground/eval/scene_checker.py` reads the result: the object whose centre lies "
             "in the mask must have the new colour and shape; in two-object scenes the other object must still read "
             "correctly; outside the feathered mask the largest pixel difference from the input must be 0. The "
             "ceiling row is the edited scene rendered exactly. Reproduce: `python -m playground evaluate inpaint`.")
