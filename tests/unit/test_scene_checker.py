"""The scene checker that judges text-to-image prompt adherence: the caption parser inverts the
grammar, and the image reader gets every attribute of rendered scenes right, clean or degraded.

Measured (2-core CPU; read_scene takes about 2 ms per clean image, 4 ms per degraded one):
- clean renders, 1,000 per split (train, test, val; this file runs 200 of val): 100.0 % on every
  attribute; 5,000 train + 5,000 test (seed 100): 100.0 % on every attribute.
- degraded renders (Gaussian blur sigma 1 px, hue +-3 deg, noise sigma 0.05, then JPEG quality 50
  with PIL's default 4:2:0 chroma, all at once): 100.0 % on every attribute but shape, which is
  99.3 % (train) and 98.0 % (test) on the 300 per split here, 99.4 % and 99.1 % on 1,000 per split.
  The misses are small objects on gray whose luma hardly differs from the background, so that
  only JPEG's half-resolution chroma shows their shape.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from playground.data import scenes as S
from playground.eval import scene_checker as C

torch.set_num_threads(1)


def _specs(n: int, split: str, seed: int) -> list[S.SceneSpec]:
    rng = np.random.default_rng([seed, S.SPLITS.index(split)])
    return [S.sample_spec(rng, split) for _ in range(n)]


def degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blur (sigma 1 px), shift the hue by up to 3 degrees, add noise (sigma 0.05), save as JPEG 50."""
    img = img.filter(ImageFilter.GaussianBlur(1.0))
    hsv = np.asarray(img.convert("HSV")).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-3.0, 3.0) / 360.0 * 256.0) % 256.0
    img = Image.fromarray((hsv.round() % 256).astype(np.uint8), "HSV").convert("RGB")
    x = np.asarray(img).astype(np.float32) / 255.0 + rng.normal(0.0, 0.05, (*img.size[::-1], 3))
    img = Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=50)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _accuracy(specs: list[S.SceneSpec], rng: np.random.Generator | None = None) -> dict[str, float]:
    results = []
    for spec in specs:
        img = S.render(spec)
        if rng is not None:
            img = degrade(img, rng)
        results.append(C.check(C.parse_caption(spec.caption), C.read_scene(img)))
    return C.aggregate(results)


def _assert_all_at_least(agg: dict[str, float], floor: float, label: str) -> None:
    for key in (*C.ATTRIBUTES, "all"):
        assert agg[f"n_{key}"] > 0, (label, key)
        assert agg[key] >= floor, (label, key, agg)


# ----------------------------------------------------------------------------- captions

@pytest.mark.parametrize("split", S.SPLITS)
def test_parse_caption_round_trips_generated_captions(split):
    specs = _specs(3000, split, seed=11)
    for spec in specs:
        parsed = C.parse_caption(spec.caption)
        assert parsed == C.prompt_from_scene(spec), spec.caption
        assert parsed.count == len(spec.objects)
    kinds = {(len(s.objects), s.place is not None, s.relation is not None, s.background_named) for s in specs}
    assert len(kinds) == 8                          # every caption form was exercised


def test_parse_caption_examples_and_normalisation():
    p = C.parse_caption("a green triangle above a purple circle on a black background")
    assert [(o.colour, o.shape, o.size) for o in p.objects] == [("green", "triangle", None),
                                                                ("purple", "circle", None)]
    assert (p.relation, p.place, p.background, p.count) == ("above", None, "black", 2)
    p = C.parse_caption("  A small Blue square in the top left. ")
    assert (p.objects[0].size, p.objects[0].colour, p.place, p.background, p.background_named) == \
        ("small", "blue", "top left", "white", False)
    p = C.parse_caption("an orange circle and a large red square")
    assert p.relation is None and p.objects[1].size == "large" and p.count == 2
    assert C.parse_caption("a red circle on a white background").background_named


@pytest.mark.parametrize("caption", [
    "", "circle", "red circle", "a pink circle", "a red hexagon", "a huge red circle",
    "a red circle on a pink background", "a red circle to the left of", "a red circle and",
    "a red circle on the left on the right", "a red circle above a blue square in the top left",
    "a red circle on the left above a blue square", "a red circle above a blue square and a green square",
    "a red circle below", "the red circle", "a red circle in the middle", "a red circle, please",
])
def test_parse_caption_rejects_text_outside_the_grammar(caption):
    with pytest.raises(ValueError):
        C.parse_caption(caption)


def test_parse_caption_rejects_non_strings():
    with pytest.raises(ValueError):
        C.parse_caption(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- reading renders

@pytest.mark.parametrize("split,n", [("train", 1000), ("test", 1000), ("val", 200)])
def test_reads_clean_renders(split, n):
    agg = _accuracy(_specs(n, split, seed=1))
    assert agg["n"] == n
    _assert_all_at_least(agg, 0.995, f"clean {split}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_degraded_renders(split):
    agg = _accuracy(_specs(300, split, seed=2), np.random.default_rng(5))
    _assert_all_at_least(agg, 0.97, f"degraded {split}")


def test_reading_geometry_matches_the_spec():
    for spec in _specs(200, "test", seed=3):
        reading = C.read_scene(S.render(spec))
        assert reading.background == spec.background and reading.count == len(spec.objects)
        for obj in spec.objects:
            found = min(reading.objects, key=lambda o: math.hypot(o.cx - obj.cx, o.cy - obj.cy))
            assert math.hypot(found.cx - obj.cx, found.cy - obj.cy) < 0.75, spec.caption
            assert abs(found.diameter - obj.diameter_px) < 1.0, spec.caption
            assert (found.colour, found.shape, found.size) == (obj.colour, obj.shape, obj.size)
            left, top, right, bottom = found.box
            assert left < found.cx < right and top < found.cy < bottom


def _touching(n: int, seed: int) -> list[S.SceneSpec]:
    """Two-object test scenes of two colours, the second object moved to overlap the first by 1 px
    (centre distance = mean diameter - 1, in a random direction): what a generated scene may look like."""
    rng, out = np.random.default_rng(seed), []
    while len(out) < n:
        spec = S.sample_spec(rng, "test")
        if len(spec.objects) != 2 or spec.objects[0].colour == spec.objects[1].colour:
            continue
        a, b = spec.objects
        dist, angle = (a.diameter_px + b.diameter_px) / 2 - 1.0, rng.uniform(0, 2 * np.pi)
        bx, by, r = a.cx + dist * np.cos(angle), a.cy + dist * np.sin(angle), b.diameter_px / 2
        if r + 1 < bx < S.UNIT - 1 - r and r + 1 < by < S.UNIT - 1 - r:
            b.cx, b.cy = float(bx), float(by)
            out.append(spec)
    return out


def test_touching_objects_of_two_colours_are_two_objects():
    # measured: 150 of 150 read as two objects of the right colours
    specs = _touching(150, seed=7)
    right = [(r.count, sorted(o.colour for o in r.objects)) == (2, sorted(o.colour for o in s.objects))
             for s in specs for r in [C.read_scene(S.render(s))]]
    assert np.mean(right) >= 0.98, np.mean(right)


VALIDATION = Path(__file__).resolve().parents[1] / "data" / "checker_validation"


def test_counts_generated_scenes_as_a_person_does():
    """57 generated scenes (tiny_sd, guidance 7.5) whose objects were counted by eye: a generated object
    whose hue drifts (a yellow disc with an orange rim) is one object. Measured: 54 of 57 agree (the
    three misses are two same-coloured squares blurred into one blob, read as three or four objects);
    before single-shape regions were kept whole, 34 of 57 agreed."""
    meta = json.loads((VALIDATION / "labels.json").read_text())
    items = meta["items"]
    assert len(items) == 57
    agree = [C.read_scene(Image.open(VALIDATION / it["file"])).count == it["objects_seen"] for it in items]
    assert np.mean(agree) >= 0.9, [it["file"] for it, ok in zip(items, agree) if not ok]


# ----------------------------------------------------------------------------- inputs

def _one_scene() -> S.SceneSpec:
    rng = np.random.default_rng(4)
    while True:
        spec = S.sample_spec(rng, "test")
        if len(spec.objects) == 2 and spec.background == "black":
            return spec


def _summary(reading: C.SceneReading) -> tuple:
    return reading.background, sorted((o.colour, o.shape, o.size) for o in reading.objects)


def test_accepts_other_sizes_arrays_and_alpha():
    spec = _one_scene()
    want = _summary(C.read_scene(S.render(spec)))
    assert len(want[1]) == 2
    assert _summary(C.read_scene(S.render(spec, 128))) == want
    assert _summary(C.read_scene(S.render(spec, 32))) == want
    arr = np.asarray(S.render(spec))
    assert _summary(C.read_scene(arr)) == want                                     # HWC uint8
    assert _summary(C.read_scene(arr.astype(np.float32) / 255.0)) == want          # float in [0, 1]
    assert _summary(C.read_scene(arr.transpose(2, 0, 1).copy())) == want           # CHW
    rgba = S.render(spec).convert("RGBA")
    assert _summary(C.read_scene(rgba)) == want
    assert _summary(C.read_scene(np.asarray(rgba))) == want
    clear = np.zeros((64, 64, 4), dtype=np.uint8)                                  # fully transparent
    assert _summary(C.read_scene(clear)) == ("white", [])


def test_grayscale_and_empty_images_have_no_objects():
    spec = _one_scene()
    gray = S.render(spec).convert("L")
    assert C.read_scene(gray).objects == []
    assert C.read_scene(np.asarray(gray)).objects == []
    for level, name in ((255, "white"), (128, "gray"), (0, "black")):
        reading = C.read_scene(np.full((64, 64, 3), level, dtype=np.uint8))
        assert (reading.background, reading.count) == (name, 0)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    reading = C.read_scene(noise)                                                  # must not crash
    assert reading.background in S.BACKGROUNDS


@pytest.mark.parametrize("bad", [np.zeros(64), np.zeros((64, 64, 2)), np.zeros((4, 4, 3)),
                                 np.zeros((2, 64, 64, 3)), np.array([["a"] * 16] * 16)])
def test_rejects_arrays_that_are_not_images(bad):
    with pytest.raises(ValueError):
        C.read_scene(bad)


# ----------------------------------------------------------------------------- checking

def _obj(colour: str, shape: str, size: str, cx: float, cy: float) -> C.DetectedObject:
    d = 28.0 if size == "large" else 16.0
    return C.DetectedObject(colour=colour, shape=shape, size=size, cx=cx, cy=cy,
                            box=(cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2), diameter=d,
                            area=d * d, hue=S.COLOURS[colour], blur=0.0)


def test_check_marks_each_attribute():
    spec = C.parse_caption("a small red circle above a blue square on a gray background")
    right = C.SceneReading("gray", 0.5, [_obj("blue", "square", "large", 30, 48),
                                         _obj("red", "circle", "small", 30, 12)])
    res = C.check(spec, right)
    assert res == {"colour": True, "shape": True, "size": True, "place": None, "relation": True,
                   "background": True, "count": True, "all": True}
    swapped = C.SceneReading("gray", 0.5, [_obj("blue", "square", "large", 30, 12),
                                           _obj("red", "circle", "small", 30, 48)])
    res = C.check(spec, swapped)
    assert res["relation"] is False and res["colour"] and res["shape"] and res["all"] is False
    wrong = C.SceneReading("white", 1.0, [_obj("red", "square", "large", 30, 12)])
    res = C.check(spec, wrong)
    assert (res["colour"], res["shape"], res["size"], res["relation"], res["background"], res["count"]) == \
        (False, False, False, False, False, False)
    # order of detection does not matter: the assignment is optimal
    assert C.check(spec, C.SceneReading("gray", 0.5, right.objects[::-1]))["all"] is True


def test_check_place_size_and_unstated_attributes():
    spec = C.parse_caption("a green triangle in the top right")
    ok = C.SceneReading("white", 1.0, [_obj("green", "triangle", "small", 50, 10)])
    res = C.check(spec, ok)
    assert res["size"] is None and res["relation"] is None and res["place"] is True and res["all"]
    assert C.check(spec, C.SceneReading("white", 1.0, [_obj("green", "triangle", "small", 30, 10)]))["place"] is False
    stray = C.SceneReading("white", 1.0, [_obj("green", "triangle", "small", 50, 10),
                                          _obj("red", "circle", "small", 10, 50)])
    res = C.check(spec, stray)
    assert res["colour"] and res["place"] and res["count"] is False and res["all"] is False
    assert C.check(spec, C.SceneReading("white", 1.0, []))["place"] is False
    for place, (cx, cy) in {"left": (10, 50), "center": (32, 32), "bottom left": (5, 60), "top": (60, 3)}.items():
        assert C.place_holds(place, cx, cy)
    assert not C.place_holds("center", 32, 10)


def test_object_colours_follow_the_checks_matching():
    spec = C.parse_caption("a red circle above a green square")
    reading = C.SceneReading("white", 1.0, [_obj("blue", "square", "large", 30, 48),
                                            _obj("red", "circle", "small", 30, 12)])
    found, verdicts = C.match(spec, reading)
    assert [f.colour for f in found] == ["red", "blue"] and verdicts["colour"] is False
    assert C.object_colours(spec, reading) == [("red", "circle", True), ("green", "square", False)]
    # an object with no detection left to pair with is a miss
    assert C.object_colours(spec, C.SceneReading("white", 1.0, reading.objects[1:])) == \
        [("red", "circle", True), ("green", "square", False)]
    # the colour verdict of check is exactly "every named object in its colour"
    right = [_obj("green", "square", "large", 30, 48), _obj("red", "circle", "small", 30, 12)]
    for objs in ([], reading.objects, right):
        r = C.SceneReading("white", 1.0, objs)
        assert C.check(spec, r)["colour"] == all(ok for _, _, ok in C.object_colours(spec, r))


def test_colour_by_pair_counts_held_out_pairs_apart():
    specs = [C.parse_caption("an orange circle to the left of a red square"), C.parse_caption("a green triangle"),
             C.parse_caption("a blue circle")]
    readings = [C.SceneReading("white", 1.0, [_obj("yellow", "circle", "small", 10, 30),
                                              _obj("red", "square", "small", 50, 30)]),
                C.SceneReading("white", 1.0, [_obj("green", "triangle", "small", 30, 30)]),
                C.SceneReading("white", 1.0, [_obj("blue", "circle", "small", 30, 30)])]
    by = C.colour_by_pair(specs, readings)
    assert by["held-out pairs"] == {"right": 1, "n": 2, "rate": 0.5}
    assert by["training pairs"] == {"right": 2, "n": 2, "rate": 1.0}
    assert by["orange circle"]["rate"] == 0.0 and by["green triangle"]["rate"] == 1.0
    assert by["purple square"]["n"] == 0 and math.isnan(by["purple square"]["rate"])
    assert set(by) == {"held-out pairs", "training pairs", *(f"{c} {s}" for c, s in S.HELDOUT_PAIRS)}
    with pytest.raises(ValueError):
        C.colour_by_pair(specs, readings[:2])                   # one reading per prompt


def test_aggregate_counts_only_prompts_that_state_an_attribute():
    a = {"colour": True, "shape": False, "size": None, "place": True, "relation": None,
         "background": True, "count": True, "all": False}
    b = {"colour": False, "shape": True, "size": True, "place": None, "relation": None,
         "background": True, "count": False, "all": False}
    agg = C.aggregate([a, b])
    assert agg["colour"] == 0.5 and agg["n_colour"] == 2 and agg["size"] == 1.0 and agg["n_size"] == 1
    assert agg["place"] == 1.0 and agg["n_place"] == 1 and agg["all"] == 0.0 and agg["n"] == 2
    assert math.isnan(agg["relation"]) and agg["n_relation"] == 0
