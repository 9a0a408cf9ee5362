"""Synthetic scenes: captions match the drawn geometry and colours; splits hold out compositions."""
import colorsys
import json

import numpy as np
import pytest
import torch

from playground.data import scenes as S


def _specs(n: int, split: str = "train", seed: int = 0) -> list[S.SceneSpec]:
    rng = np.random.default_rng(seed)
    return [S.sample_spec(rng, split) for _ in range(n)]


@pytest.fixture(scope="module")
def train_specs() -> list[S.SceneSpec]:
    return _specs(2000)


def test_deterministic_for_a_seed():
    a, b = S.render_dataset(20, seed=7, size=32), S.render_dataset(20, seed=7, size=32)
    assert a.captions == b.captions and torch.equal(a.images, b.images)
    assert S.render_dataset(20, seed=8, size=32).captions != a.captions
    assert S.render_dataset(20, seed=7, size=32, split="val").captions != a.captions


def test_image_shape_dtype_range():
    for size in (32, 64):
        batch = S.render_dataset(6, seed=1, size=size)
        assert batch.images.shape == (6, 3, size, size) and batch.images.dtype == torch.float32
        assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
        assert len(batch) == len(batch.specs) == 6
    assert S.render(batch.specs[0], 48).size == (48, 48) and S.render(batch.specs[0]).mode == "RGB"


def test_caption_mentions_objects_and_background(train_specs):
    for spec in train_specs:
        cap = spec.caption
        assert 1 <= len(spec.objects) <= 2
        for o in spec.objects:
            assert f"{o.colour} {o.shape}" in cap
            assert o.phrase().endswith(f"{o.size} {o.colour} {o.shape}" if o.size_named
                                       else f" {o.colour} {o.shape}")
            lo, hi = S.SIZES[o.size]
            assert lo <= o.diameter_px <= hi
        if spec.background != "white":
            assert cap.endswith(f"on a {spec.background} background")
        assert ("background" in cap) == spec.background_named
        if len(spec.objects) == 1:
            assert cap.startswith(spec.objects[0].phrase())
        else:
            a, b = spec.objects
            assert cap.startswith(f"{a.phrase()} {spec.relation or 'and'} {b.phrase()}"), cap
    assert {s.place for s in train_specs} == set(S.PLACES) | {None}
    assert {s.relation for s in train_specs} == set(S.RELATIONS) | {None}
    assert {s.background for s in train_specs} == set(S.BACKGROUNDS)
    json.dumps(train_specs[0].to_dict())
    assert S.SceneSpec.from_dict(train_specs[0].to_dict()) == train_specs[0]


def test_objects_inside_and_not_overlapping(train_specs):
    for spec in train_specs:
        for o in spec.objects:
            left, top, right, bottom = o.box
            assert left >= S.MARGIN - 1e-6 and top >= S.MARGIN - 1e-6
            assert right <= S.UNIT - S.MARGIN + 1e-6 and bottom <= S.UNIT - S.MARGIN + 1e-6
        if len(spec.objects) == 2:
            (l1, t1, r1, b1), (l2, t2, r2, b2) = (o.box for o in spec.objects)
            gap = max(l2 - r1, l1 - r2, t2 - b1, t1 - b2)
            assert gap >= S.GAP - 1e-6, spec.caption


def test_relation_geometry_holds(train_specs):
    related = [s for s in train_specs if s.relation]
    assert len(related) > 300
    for spec in related:
        a, b = spec.objects
        dx, dy = b.cx - a.cx, b.cy - a.cy            # y grows downwards
        along, across = {"to the left of": (dx, dy), "to the right of": (-dx, dy),
                         "above": (dy, dx), "below": (-dy, dx)}[spec.relation]
        min_sep = (a.diameter_px + b.diameter_px) / 2 + S.GAP
        assert along >= min_sep - 1e-6 and abs(across) <= along / 2 + 1e-6, spec.caption


def test_place_puts_object_in_its_third(train_specs):
    placed = [s for s in train_specs if s.place]
    assert len(placed) > 200
    third = lambda v: int(v // (S.UNIT / 3))  # noqa: E731
    for spec in placed:
        (o,) = spec.objects
        words = spec.place.split()
        col = {"left": 0, "center": 1, "right": 2}.get(words[-1])
        row = {"top": 0, "center": 1, "bottom": 2}.get(words[0])
        assert col is not None or row is not None
        if col is not None:
            assert third(o.cx) == col, spec.caption
        if row is not None:
            assert third(o.cy) == row, spec.caption
        assert S.PLACE_PHRASES[spec.place] in spec.caption


def test_heldout_pairs_only_in_test(train_specs):
    held = set(S.HELDOUT_PAIRS)
    for spec in train_specs + _specs(500, "val"):
        assert not any((o.colour, o.shape) in held for o in spec.objects), spec.caption
    test = _specs(500, "test")
    for spec in test:
        assert any((o.colour, o.shape) in held for o in spec.objects), spec.caption
    seen = {(o.colour, o.shape) for s in test for o in s.objects}
    assert held <= seen
    # every colour and every shape is still seen in training
    train_pairs = {(o.colour, o.shape) for s in train_specs for o in s.objects}
    assert {c for c, _ in train_pairs} == set(S.COLOURS) and {s for _, s in train_pairs} == set(S.SHAPES)


def test_centre_pixel_has_the_object_colour():
    for spec in _specs(150, "test", seed=3) + _specs(150, seed=4):
        img = np.asarray(S.render(spec, 64))
        for o in spec.objects:
            pixel = img[int(o.cy), int(o.cx)]
            assert np.abs(pixel.astype(int) - np.array(o.rgb)).max() <= 2, spec.caption
            h, s, v = colorsys.rgb_to_hsv(*(pixel / 255.0))
            hue_err = abs((h * 360 - S.COLOURS[o.colour] + 180) % 360 - 180)
            assert hue_err <= S.HUE_JITTER + 1.5 and s >= 0.6 and v >= 0.6, spec.caption
