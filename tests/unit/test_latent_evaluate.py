"""The txt2img evaluation's mechanics on a tiny random pipeline: held-out prompts, per-prompt noise,
the results' structure, determinism and resuming from the image cache. (A random model scores
about nothing; quality is not asserted here.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from playground.data import scenes as S
from playground.eval.scene_checker import ATTRIBUTES, check, parse_caption, read_scene
from playground.latent import evaluate as E
from playground.latent.components import load_pipeline, random_pipeline

torch.set_num_threads(1)
SCALES = (1.0, 3.0)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    folder = random_pipeline(tmp_path_factory.mktemp("tiny") / "pipe", preset="test", seed=0)
    return load_pipeline(folder)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return E.heldout_prompts(3, seed=0)


def _run(pipe, prompts, cache: Path | None, **kw):
    return E.evaluate_adherence(pipe, prompts, guidance_scales=SCALES, steps=2, batch=2, seed=0,
                                progress=False, cache_dir=cache, **kw)


def _pngs(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)).split("/", 1)[1]: np.asarray(Image.open(p))
            for p in sorted(root.rglob("*.png")) if ".tmp." not in p.name}


def _scores(result: dict) -> str:
    """The per-scale tables without timings, as text (so that NaN equals NaN)."""
    return json.dumps({k: {m: v for m, v in t.items() if not m.startswith("seconds")}
                       for k, t in result["scales"].items()}, sort_keys=True)


# ----------------------------------------------------------------------------- prompts

def test_heldout_prompts_are_distinct_deterministic_and_unseen():
    prompts = E.heldout_prompts(200, seed=0)
    assert len(prompts) == len(set(prompts)) == 200
    assert prompts == E.heldout_prompts(200, seed=0)
    assert prompts != E.heldout_prompts(200, seed=1)
    assert E.heldout_prompts(50, seed=0) == prompts[:50]
    rng = np.random.default_rng(0)
    train = {S.sample_spec(rng, "train").caption for _ in range(5000)}
    assert not train & set(prompts)
    for p in prompts:
        claim = parse_caption(p)
        assert any((o.colour, o.shape) in S.HELDOUT_PAIRS for o in claim.objects), p


def test_scene_for_prompt_draws_what_the_prompt_says():
    for i, prompt in enumerate(E.heldout_prompts(100, seed=3)):
        spec = E.scene_for_prompt(prompt, seed=i)
        assert spec.caption == prompt
        assert parse_caption(prompt) == parse_caption(" ".join(
            [spec.objects[0].phrase()] + ([S.PLACE_PHRASES[spec.place]] if spec.place else [])
            + ([spec.relation or "and", spec.objects[1].phrase()] if len(spec.objects) == 2 else [])
            + ([f"on a {spec.background} background"] if spec.background_named else [])))
        assert check(parse_caption(prompt), read_scene(S.render(spec)))["all"], prompt
    assert E.scene_for_prompt("a red circle", 5) == E.scene_for_prompt("a red circle", 5)


# ----------------------------------------------------------------------------- mechanics

def test_structure_of_the_results(pipe, prompts, tmp_path):
    result = _run(pipe, prompts, tmp_path / "cache")
    settings = result["settings"]
    assert settings["prompts"] == 3 and settings["guidance_scales"] == list(SCALES)
    assert settings["steps"] == 2 and settings["scheduler"] == "dpm++" and settings["image_size"] == 64
    assert len(settings["weights"]) == 16
    assert set(result["scales"]) == {"1", "3"}
    for table in [*result["scales"].values(), result["reference"]]:
        assert table["n"] == 3 and table["n_colour"] == 3 and table["n_background"] == 3
        for key in (*ATTRIBUTES, "all"):
            assert math.isnan(table[key]) or 0.0 <= table[key] <= 1.0
        assert table["seconds"] >= 0
        by = table["colour_by_pair"]
        assert by["held-out pairs"]["n"] + by["training pairs"]["n"] == sum(
            len(parse_caption(p).objects) for p in prompts)
    assert result["reference"]["colour_by_pair"]["held-out pairs"]["rate"] == 1.0  # real renders: every object
    assert result["scales"]["1"]["seconds"] > 0 and result["scales"]["1"]["seconds_per_image"] > 0
    assert result["reference"]["all"] == 1.0                    # the checker reads real renders right
    assert [r["guidance"] for r in result["rows"]] == ["1", "3", E.AUTOENCODER_ROW, "real renders (ceiling)"]
    assert result["autoencoder"]["n"] == 3 and 0.0 <= result["autoencoder"]["colour"] <= 1.0
    json.dumps(result)                                           # serialisable for metrics.json
    table = E.markdown_table(result)
    lines = table.splitlines()
    assert len(lines) == 2 + 4 and lines[0].startswith("| guidance | colour (n=3)") and "seconds" in lines[0]
    assert "real renders (ceiling) | 100.0 %" in table
    # 3 prompts x 2 scales cached as PNGs, with their timing
    root = Path(settings["cache"])
    assert len(list(root.rglob("*.png"))) == 6
    assert json.loads((root / "g1" / "meta.json").read_text())["generated"] == 3


def test_deterministic_and_pipe_untouched(pipe, prompts, tmp_path):
    scheduler_before = type(pipe.scheduler)
    a = _run(pipe, prompts, tmp_path / "a", keep_checks=True)
    b = _run(pipe, prompts, tmp_path / "b", keep_checks=True)
    assert type(pipe.scheduler) is scheduler_before
    assert a["checks"] == b["checks"]
    assert _scores(a) == _scores(b)
    pa, pb = _pngs(tmp_path / "a"), _pngs(tmp_path / "b")
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    # guidance changes the picture, not the starting noise
    assert any(not np.array_equal(pa[k], pa[k.replace("g1/", "g3/")]) for k in pa if k.startswith("g1/"))


def test_noise_belongs_to_the_prompt_not_the_batch(pipe, prompts):
    both, _ = E.generate_images(pipe, prompts[:2], 3.0, steps=2, seed=10, batch=2, progress=False)
    alone, _ = E.generate_images(pipe, prompts[1:2], 3.0, steps=2, seed=11, batch=1, progress=False)
    assert np.abs(both[1].astype(int) - alone[0].astype(int)).max() <= 1
    other, _ = E.generate_images(pipe, prompts[1:2], 3.0, steps=2, seed=12, batch=1, progress=False)
    assert not np.array_equal(other[0], alone[0])


def test_resumes_from_the_cache(pipe, prompts, tmp_path, capsys):
    cache = tmp_path / "cache"
    first = _run(pipe, prompts, cache, keep_checks=True)
    root = Path(first["settings"]["cache"])
    before = _pngs(cache)
    victim = sorted((root / "g3").glob("*.png"))[1]
    victim.unlink()                                   # as if the run had been killed there
    (root / "g3" / "leftover.tmp.png").write_bytes(b"")   # a half-written file is ignored
    second = E.evaluate_adherence(pipe, prompts, guidance_scales=SCALES, steps=2, batch=2, seed=0,
                                  progress=True, cache_dir=cache, keep_checks=True)
    err = capsys.readouterr().err
    assert "guidance 3: 3/3 images" in err and "guidance 1:" not in err     # scale 1 all cached
    assert json.loads((root / "g3" / "meta.json").read_text())["generated"] == 4   # 3, then 1 more
    assert json.loads((root / "g1" / "meta.json").read_text())["generated"] == 3   # untouched
    after = _pngs(cache)
    assert after.keys() >= before.keys()
    assert all(np.abs(after[k].astype(int) - before[k].astype(int)).max() <= 1 for k in before)
    assert second["checks"] == first["checks"]
    assert second["scales"]["1"]["seconds"] == pytest.approx(first["scales"]["1"]["seconds"])


def test_cache_key_follows_weights_and_settings(pipe, prompts, tmp_path):
    a = _run(pipe, prompts[:1], tmp_path)["settings"]["cache"]
    b = E.evaluate_adherence(pipe, prompts[:1], guidance_scales=(1.0,), steps=3, progress=False,
                             cache_dir=tmp_path, reference=False)
    assert b["settings"]["cache"] != a and "reference" not in b
    assert E.weights_hash(pipe) == E.weights_hash(pipe)
    with torch.no_grad():
        p = next(pipe.unet.parameters())
        p.add_(1.0)
        changed = E.weights_hash(pipe)
        p.sub_(1.0)
    assert changed != E.weights_hash(pipe)
    assert _run(pipe, prompts[:1], None)["settings"]["cache"] is None      # no cache at all


def test_bad_inputs(pipe):
    with pytest.raises(ValueError):
        E.evaluate_adherence(pipe, ["a red circle", "a pink elephant"], progress=False, cache_dir=None)
    with pytest.raises(ValueError):
        E.evaluate_adherence(pipe, [], progress=False, cache_dir=None)
    with pytest.raises(ValueError):
        E.evaluate_adherence(pipe, ["a red circle"], scheduler="nope", steps=2, progress=False, cache_dir=None)


def test_evaluate_and_card_writes_metrics_and_the_card(tmp_path):
    """The ``evaluate txt2img`` command's function, end to end on a tiny random pipeline (mechanics only:
    a random model scores about nothing)."""
    root = tmp_path / "checkpoints"
    random_pipeline(root / "tiny_sd", preset="test", seed=0)
    metrics = E.evaluate_and_card(root, n_prompts=3, guidance_scales=(1.0, 2.0), steps=2, progress=False,
                                  cache_dir=tmp_path / "cache", speed=False)
    assert set(metrics["adherence"]["scales"]) == {"1", "2"} and metrics["adherence"]["settings"]["prompts"] == 3
    saved = json.loads((root / "tiny_sd" / "metrics.json").read_text())
    assert saved["adherence"]["settings"]["steps"] == 2
    card = (root / "tiny_sd" / "README.md").read_text()
    assert "Prompt adherence" in card and "real renders (ceiling)" in card and E.AUTOENCODER_ROW in card
    assert "## Where colour fails" in card and "| unseen captions, guidance 2 |" in card
    assert "| held-out pairs, guidance 1 |" in card and "orange circle objects" in card


def test_autoencoder_row_reads_real_renders_through_the_vae(pipe, prompts):
    """The ceiling row passes the exact renders through ``pipe.vae``: with an identity-like autoencoder it
    would equal the real-render row; with the random test one it must still be a checker table."""
    row = E.autoencoder_row(pipe, prompts, seed=0)
    assert row["n"] == 3 and row["seconds"] > 0

    class Identity:                                               # encode = pixels, decode = pixels
        device, dtype = torch.device("cpu"), torch.float32

        def encode(self, x):
            return type("Out", (), {"latent_dist": type("D", (), {"mean": x})()})()

        def decode(self, z):
            return type("Out", (), {"sample": z})()

    exact = E.autoencoder_row(type("P", (), {"vae": Identity()})(), prompts, seed=0)
    assert exact["all"] == 1.0                                     # the renders themselves: all right


def test_speed_figures_time_the_pipeline_and_restore_threads(pipe):
    threads = torch.get_num_threads()
    speed = E.speed_figures(pipe, steps=2, repeats=1)
    assert speed["one_image_seconds_1_thread"] > 0 and speed["one_image_seconds_2_threads"] > 0
    assert speed["four_images_seconds_1_thread"] > 0 and speed["steps"] == 2
    assert torch.get_num_threads() == threads


def test_unseen_prompts_never_occur_among_the_training_captions():
    from playground.latent.train import pool_captions

    seen = pool_captions(pool_size=3000, seed=0)
    prompts = E.unseen_prompts(30, seed=0, pool_size=3000)
    assert len(prompts) == len(set(prompts)) == 30 and not seen & set(prompts)
    assert prompts == E.unseen_prompts(30, seed=0, pool_size=3000)
    heldout = {f"{c} {s}" for c, s in S.HELDOUT_PAIRS}
    assert not any(pair in p for p in prompts for pair in heldout)      # training colour-shape pairs only
