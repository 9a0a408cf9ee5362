"""``python -m playground train tiny_sd`` in miniature: all four stages, the shipped folder, exact resumption."""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch
from safetensors.torch import load_file

from playground.core.checkpoint import read_history
from playground.latent.components import build_train_scheduler, load_pipeline, training_target
from playground.latent.guided_decoder import (_chunk_setting, build_guided_pairs, colour_l1, gaussian_blur, hue_l1,
                                             img2img_pipeline, pair_chunk)
from playground.latent.refine_autoencoder import refine_loss
from playground.latent.train import (DECODER_PARTS, drop_captions, lr_factor, overshoot_latents, preset, stage2_lr_factor,
                                     stage2_phase, step_generator, train, train_continue_from,
                                     train_stage4_from, until, stops)

torch.set_num_threads(1)


def _run(root: Path, **kw) -> dict:
    return train("tiny_sd", preset("test"), out_dir=root / "checkpoints" / "tiny_sd", runs_dir=root / "runs" / "tiny_sd",
                 progress=False, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*/*.safetensors")):
        out.update({f"{f.parent.name}/{k}": v.clone() for k, v in load_file(str(f)).items()})   # not views of the file
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny_sd")
    return root, _run(root)


def test_training_writes_a_loadable_pipeline_and_its_record(trained: tuple[Path, dict]) -> None:
    root, record = trained
    folder = root / "checkpoints" / "tiny_sd"
    cfg = preset("test")
    assert record["vae_steps"] == cfg.vae_steps and record["unet_steps"] == cfg.unet_steps
    assert record["vae_val_psnr_db"] > 0 and record["vae_val_mse"] > 0 and record["scaling_factor"] > 0
    assert json.loads((folder / "training.json").read_text())["unet_steps"] == cfg.unet_steps
    history = (folder / "history.csv").read_text().splitlines()
    assert history[0].startswith("stage,step,loss")
    assert len(history) == 1 + cfg.vae_steps + cfg.unet_steps + cfg.decoder_steps + cfg.guided_decoder_steps
    assert record["decoder_steps"] == cfg.decoder_steps and record["decoder_val_psnr_db"] > 0
    assert record["guided_decoder_steps"] == cfg.guided_decoder_steps and record["guided_decoder_val_psnr_db"] > 0
    assert record["guided_pairs"] == cfg.guided_pairs
    card = (folder / "README.md").read_text()
    assert "python -m playground train tiny_sd" in card and "unet/diffusion_pytorch_model.safetensors" in card
    pipe = load_pipeline(folder)
    assert pipe.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    image = pipe("a large red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                 output_type="np").images
    assert image.shape == (1, 64, 64, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert {"vae.pt", "unet.pt", "latents.pt", "decoder.pt", "guided_pairs.pt", "guided_decoder.pt"} <= {
        p.name for p in (root / "runs" / "tiny_sd").iterdir()}


def test_decoder_fine_tune_leaves_the_encoder_and_so_the_latent_space_alone(trained: tuple[Path, dict]) -> None:
    root, _ = trained
    stage1 = torch.load(root / "runs" / "tiny_sd" / "vae.pt", weights_only=True)["vae"]
    shipped = load_file(str(root / "checkpoints" / "tiny_sd" / "vae" / "diffusion_pytorch_model.safetensors"))
    frozen = [k for k in stage1 if not k.startswith(DECODER_PARTS)]
    trained_ = [k for k in stage1 if k.startswith(DECODER_PARTS)]
    assert frozen and trained_ and set(stage1) == set(shipped)
    assert all(torch.equal(stage1[k], shipped[k]) for k in frozen)
    assert any(not torch.equal(stage1[k], shipped[k]) for k in trained_)


def test_interrupted_training_resumes_to_identical_weights(trained: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = trained
    first = _run(tmp_path, stop_after=2)                       # inside stage 1
    assert first["interrupted_at"]["stage"] == 1
    second = _run(tmp_path, stop_after=2)                      # finishes stage 1, then one U-Net step
    assert second["interrupted_at"]["stage"] == 2
    third = _run(tmp_path, stop_after=4)                       # the other three U-Net steps, one decoder step
    assert third["interrupted_at"]["stage"] == 3
    fourth = _run(tmp_path, stop_after=2)                      # the other decoder step, one stage-4 step
    assert fourth["interrupted_at"]["stage"] == 4
    _run(tmp_path)
    straight, resumed = _weights(root / "checkpoints" / "tiny_sd"), _weights(tmp_path / "checkpoints" / "tiny_sd")
    assert straight.keys() == resumed.keys() and len(straight) > 50
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_no_resume_starts_over(trained: tuple[Path, dict], tmp_path: Path) -> None:
    _run(tmp_path, stop_after=2)
    record = _run(tmp_path, resume=False)
    root, reference = trained
    assert record["final_loss"] == reference["final_loss"]     # same seed, from scratch: the same run


def test_helpers() -> None:
    assert torch.equal(torch.randn(3, generator=step_generator(0, 2, 7)), torch.randn(3, generator=step_generator(0, 2, 7)))
    assert not torch.equal(torch.randn(3, generator=step_generator(0, 2, 7)),
                           torch.randn(3, generator=step_generator(0, 2, 8)))
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1) and lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    ids, empty = torch.ones(2000, 77, dtype=torch.int32), torch.zeros(77, dtype=torch.int32)
    dropped = drop_captions(ids, empty, 0.1, torch.Generator().manual_seed(0))
    rows = (dropped == 0).all(1)
    assert 0.07 < rows.float().mean() < 0.13 and bool(((dropped == 1).all(1) | rows).all())


def test_stage2_phases_switch_target_and_restart_the_learning_rate() -> None:
    cfg = preset("tiny_sd")
    assert stage2_phase(cfg, 0) == ("sd", "epsilon", 0)
    assert stage2_phase(cfg, cfg.sd_schedule_steps) == ("ours", "epsilon", 0)
    assert stage2_phase(cfg, cfg.eps_steps) == ("ours", "v_prediction", cfg.eps_steps)
    # the ε steps keep the cosine they ran with; the v phase warms up again from nearly 0
    assert stage2_lr_factor(cfg, 100) == lr_factor(100, cfg.unet_warmup, cfg.eps_lr_steps, cfg.min_lr_factor)
    assert stage2_lr_factor(cfg, cfg.eps_steps) == pytest.approx(1 / cfg.v_warmup)
    assert stage2_lr_factor(cfg, cfg.unet_steps) == pytest.approx(cfg.min_lr_factor)


def test_warm_restart_keeps_the_earlier_cosine_and_starts_a_lower_one() -> None:
    """SGDR restarts: the v cosine before a restart is exactly the one planned without it (its end moved to
    the restart), the restart warms up again to ``restart_peak`` and decays to the same floor."""
    cfg = preset("tiny_sd", unet_steps=3000, eps_steps=1000, sd_schedule_steps=0, v_restarts=(2000,),
                 restart_peak=0.5, v_warmup=100, min_lr_factor=0.1, ema_reloads=(), refine_at=0,
                 continue_at=())
    before = preset("tiny_sd", unet_steps=2000, eps_steps=1000, sd_schedule_steps=0, v_restarts=(),
                    v_warmup=100, min_lr_factor=0.1, ema_reloads=(), refine_at=0, continue_at=())
    for step in (1000, 1099, 1500, 1999):
        assert stage2_lr_factor(cfg, step) == pytest.approx(stage2_lr_factor(before, step))
    assert stage2_lr_factor(cfg, 1999) == pytest.approx(0.1, abs=1e-4)
    assert stage2_lr_factor(cfg, 2000) == pytest.approx(0.5 / 100)          # warm-up from nearly 0
    assert stage2_lr_factor(cfg, 2099) == pytest.approx(0.5)                # to the restart's peak
    assert stage2_lr_factor(cfg, 3000) == pytest.approx(0.1)                # and down to the same floor
    assert all(stage2_lr_factor(cfg, s) <= 0.5 + 1e-9 for s in range(2000, 3001, 50))
    assert stage2_phase(cfg, 2500) == ("ours", "v_prediction", cfg.eps_steps)   # the EMA is not restarted
    with pytest.raises(AssertionError):
        preset("tiny_sd", v_restarts=(100,))                              # a restart inside the ε steps


def test_v_target_is_the_velocity() -> None:
    """v = √ᾱ_t ε − √(1−ᾱ_t) z_0 (Salimans & Ho 2022); ε-prediction's target is ε itself."""
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    v_sched, e_sched = build_train_scheduler(), build_train_scheduler(prediction_type="epsilon")
    ab = v_sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(training_target(v_sched, z0, eps, t), ab.sqrt() * eps - (1 - ab).sqrt() * z0, atol=1e-6)
    assert torch.equal(training_target(e_sched, z0, eps, t), eps)


def test_overshoot_latents_pushes_chosen_samples_away_from_their_own_mean() -> None:
    z = torch.randn(64, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.equal(overshoot_latents(z, torch.Generator().manual_seed(0), 0.0, 0.5, 0.25), z)
    pushed = overshoot_latents(z, torch.Generator().manual_seed(0), 1.0, 0.5, 0.0)
    mean = z.mean((2, 3), keepdim=True)
    assert torch.allclose(pushed.mean((2, 3), keepdim=True), mean, atol=1e-5)      # the scene's means stay
    ratio = ((pushed - mean).pow(2).mean((1, 2, 3)) / (z - mean).pow(2).mean((1, 2, 3))).sqrt()
    assert bool((ratio >= 1 - 1e-5).all() and (ratio <= 1.5 + 1e-5).all()) and float(ratio.std()) > 0.05
    half = overshoot_latents(z, torch.Generator().manual_seed(0), 0.5, 0.5, 0.25)
    kept = (half == z).flatten(1).all(1).float().mean()
    assert 0.3 < float(kept) < 0.7                                                   # about half untouched


def test_stage4_alone_from_a_saved_pipeline_changes_only_the_decoder(trained: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = trained
    base = root / "checkpoints" / "tiny_sd"
    out = tmp_path / "checkpoints" / "tiny_sd"
    record = train_stage4_from(base, preset("test"), out_dir=out, runs_dir=tmp_path / "runs", progress=False)
    assert record["guided_decoder_steps"] == preset("test").guided_decoder_steps and record["unet_steps"] == 4
    before, after = _weights(base), _weights(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(tuple(f"vae/{p}" for p in DECODER_PARTS)) for k in changed), changed
    stages = [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert stages.count("4") == preset("test").guided_decoder_steps           # stage 4 redone, not appended twice
    assert set(stages) == {"1", "2", "3", "4"}                                  # whole numbers, as stages 1-3 wrote them
    again = train_stage4_from(base, preset("test"), out_dir=out, runs_dir=tmp_path / "runs", progress=False)
    assert [line.split(",")[0] for line in (out / "history.csv").read_text().splitlines()[1:]].count("4") == 2
    assert again["guided_decoder_val_psnr_db"] == record["guided_decoder_val_psnr_db"]    # resumed: done
    assert again["wall_minutes"] == record["wall_minutes"]                   # stage 4's minutes replaced, not added
    assert [k for k, v in _weights(out).items() if not torch.equal(v, after[k])] == []


def test_rewriting_the_card_keeps_the_last_evaluation(trained: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    from playground.latent.train import write_tiny_sd_card

    folder = tmp_path / "tiny_sd"
    shutil.copytree(trained[0] / "checkpoints" / "tiny_sd", folder)
    (folder / "metrics.json").write_text(json.dumps({"speed": {"one_image_seconds_1_thread": 0.123}}))
    write_tiny_sd_card(folder)                                   # as a retrained stage does, with no sections given
    card = (folder / "README.md").read_text()
    assert "## Speed" in card and "| one_image_seconds_1_thread | 0.123 |" in card


def test_stage4_starts_over_when_its_settings_or_its_starting_decoder_change(trained: tuple[Path, dict],
                                                                              tmp_path: Path) -> None:
    root, _ = trained
    base, runs = root / "checkpoints" / "tiny_sd", tmp_path / "runs"
    first = tmp_path / "first" / "tiny_sd"
    train_stage4_from(base, preset("test"), out_dir=first, runs_dir=runs, progress=False)
    decoder = {k: v for k, v in _weights(first).items() if k.startswith("vae/decoder")}
    other = tmp_path / "other" / "tiny_sd"                 # the same runs folder: its finished state must not be reused
    train_stage4_from(base, preset("test", guided_hue_weight=0.0), out_dir=other, runs_dir=runs, progress=False)
    assert any(not torch.equal(v, _weights(other)[k]) for k, v in decoder.items())
    on_top = tmp_path / "on_top" / "tiny_sd"              # from another starting decoder (the first run's)
    train_stage4_from(first, preset("test"), out_dir=on_top, runs_dir=runs, progress=False)
    assert any(not torch.equal(v, _weights(on_top)[k]) for k, v in decoder.items())


def test_continuing_from_a_saved_pipeline_equals_a_replay_that_restarts_from_the_ema(trained: tuple[Path, dict],
                                                                                      tmp_path: Path) -> None:
    root, _ = trained
    longer = preset("test", unet_steps=6, v_restarts=(4,), ema_reloads=(4,))   # steps 1-4 as the base ran them
    replay = train("tiny_sd", longer, out_dir=tmp_path / "replay" / "tiny_sd", runs_dir=tmp_path / "runs_replay",
                   progress=False)
    record = train_continue_from(root / "checkpoints" / "tiny_sd", longer, out_dir=tmp_path / "cont" / "tiny_sd",
                                 runs_dir=tmp_path / "runs_cont", progress=False)
    assert record["unet_steps"] == replay["unet_steps"] == 6 and record["continued_from_step"] == 4
    a, b = _weights(tmp_path / "replay" / "tiny_sd"), _weights(tmp_path / "cont" / "tiny_sd")
    for k in a:
        if k.startswith(("unet/", "text_encoder/")):
            assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], _weights(root / "checkpoints" / "tiny_sd")[k]) for k in a if k.startswith("unet/"))
    rows = (tmp_path / "cont" / "tiny_sd" / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows if r.startswith("2,")] == list(range(1, 7))
    with pytest.raises(ValueError, match="ema_reloads"):
        train_continue_from(root / "checkpoints" / "tiny_sd", preset("test", unet_steps=6), out_dir=tmp_path / "x",
                            runs_dir=tmp_path / "runs_x", progress=False)


REFINED = dict(unet_steps=8, v_restarts=(4, 6), ema_reloads=(4, 6), refine_at=4, refine_steps=2, continue_at=(6,))


def test_until_keeps_the_schedule_up_to_its_end_and_drops_stage5() -> None:
    cfg = preset("tiny_sd")
    first = until(cfg, cfg.refine_at)
    assert first.unet_steps == cfg.refine_at and first.refine_at == 0 and cfg.refine_at not in first.v_restarts
    assert all(stage2_lr_factor(first, s) == stage2_lr_factor(cfg, s) for s in range(0, cfg.refine_at, 997))
    with pytest.raises(AssertionError, match="ema_reloads"):
        preset("test", unet_steps=6, refine_at=4, refine_steps=2)          # stage 5 needs a restart from the EMA there
    with pytest.raises(AssertionError, match="continue_at in ema_reloads"):
        preset("test", unet_steps=6, continue_at=(4,))
    refined = preset("test", **REFINED)
    later = until(refined, 6)                                              # a stop after stage 5 keeps it
    assert later.refine_at == 4 and later.refine_steps == 2 and later.continue_at == () and later.ema_reloads == (4,)
    assert stops(refined) == [4, 6, 8] and until(refined, 8) == refined and stops(cfg)[-1] == cfg.unet_steps


def test_stage5_refines_the_whole_autoencoder_and_a_continuation_replays_it(tmp_path: Path) -> None:
    cfg = preset("test", **REFINED)
    root = tmp_path / "full"
    first = train("tiny_sd", cfg, out_dir=root / "ck", runs_dir=root / "runs", progress=False, stop_after=12)
    assert first["interrupted_at"]["stage"] == 5          # 3 + 4 + 2 + 2 steps of stages 1-4, then stage 5's first
    record = train("tiny_sd", cfg, out_dir=root / "ck", runs_dir=root / "runs", progress=False)
    assert record["refined_at_step"] == 4 and record["refine_steps"] == 2 and record["unet_steps"] == 8
    assert record["continued_from_step"] == 6 and record["refine_val_psnr_db"] > 0
    step6 = json.loads((root / "runs" / "step_6" / "training.json").read_text())   # the stop after stage 5
    assert step6["unet_steps"] == 6 and step6["continued_from_step"] == 4
    before, after = _weights(root / "runs" / "before_refine"), _weights(root / "ck")
    encoder = [k for k in before if k.startswith("vae/") and not k.split("/", 1)[1].startswith(DECODER_PARTS)]
    assert encoder and any(not torch.equal(before[k], after[k]) for k in encoder)     # the encoder moved too
    assert json.loads((root / "ck" / "vae" / "config.json").read_text())["scaling_factor"] == pytest.approx(
        record["scaling_factor"])
    assert record["scaling_factor"] != json.loads((root / "runs" / "before_refine" / "training.json").read_text())[
        "scaling_factor"]                                 # the re-encoded pool's own scale
    stages = [int(r.split(",")[0]) for r in (root / "ck" / "history.csv").read_text().splitlines()[1:]]
    assert stages.count(5) == 2 and stages.count(2) == 8 and stages.count(4) == 2
    # the commands a session runs from a saved step-4 pipeline, each to the next stop, give the full replay's weights
    again = train_continue_from(root / "runs" / "before_refine", cfg, out_dir=tmp_path / "cont6", runs_dir=tmp_path / "r2",
                                progress=False)
    assert again["refined_at_step"] == 4 and again["unet_steps"] == 6
    last = train_continue_from(tmp_path / "cont6", cfg, out_dir=tmp_path / "cont", runs_dir=tmp_path / "r2",
                               progress=False)
    assert last["continued_from_step"] == 6 and last["unet_steps"] == 8 and last["refined_at_step"] == 4
    assert (tmp_path / "r2" / "refine" / "unet.pt").exists() and (tmp_path / "r2" / "from_6" / "unet.pt").exists()
    cont = _weights(tmp_path / "cont")
    for k in after:
        assert torch.equal(after[k], cont[k]), k


RESHAPED = {   # a continuation that changes the U-Net at step 6: fields, the record's key, the U-Net config's key
                        # before -> after, the pipeline config's key, and the least parameter ratio
    "deepen": (dict(grow_at=6, grow_layers=(1, 2, 2)), "grown_at_step", "transformer_layers_per_block", 1, [1, 2, 2],
               "unet_transformer_layers", 1.0),
    "widen": (dict(widen_at=6, widen_channels=(8, 32, 32)), "widened_at_step", "block_out_channels", [8, 16, 16],
              [8, 32, 32], "unet_channels", 2.0),
}


@pytest.mark.parametrize("how", sorted(RESHAPED))
def test_a_continuation_can_reshape_the_unet_and_a_replay_does_the_same(tmp_path: Path, how: str) -> None:
    fields, record_key, unet_key, before_value, after_value, model_key, ratio = RESHAPED[how]
    at = next(iter(fields))
    with pytest.raises(AssertionError, match=f"{at} in continue_at"):
        preset("test", unet_steps=8, ema_reloads=(6,), **fields)
    cfg = preset("test", unet_steps=8, v_restarts=(6,), ema_reloads=(6,), continue_at=(6,), **fields)
    record = train("tiny_sd", cfg, out_dir=tmp_path / "ck", runs_dir=tmp_path / "runs", progress=False)
    assert record[record_key] == 6 and record["unet_steps"] == 8
    value = lambda folder: json.loads((folder / "unet" / "config.json").read_text())[unet_key]
    assert value(tmp_path / "runs" / "step_6") == before_value and value(tmp_path / "ck") == after_value
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["model"][model_key] == after_value
    before = json.loads((tmp_path / "runs" / "step_6" / "training.json").read_text())["params_unet"]
    assert record["params_unet"] > ratio * before
    again = train_continue_from(tmp_path / "runs" / "step_6", cfg, out_dir=tmp_path / "cont", runs_dir=tmp_path / "r2",
                                progress=False)
    assert again[record_key] == 6
    full, cont = _weights(tmp_path / "ck"), _weights(tmp_path / "cont")
    assert full.keys() == cont.keys() and all(torch.equal(full[k], cont[k]) for k in full)


def test_a_stop_in_keep_decoder_at_skips_stage4_and_carries_the_decoder(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="keep_decoder_at names stops"):
        preset("test", unet_steps=10, v_restarts=(6,), ema_reloads=(6,), continue_at=(6,), keep_decoder_at=(7,))
    cfg = preset("test", unet_steps=10, v_restarts=(6, 8), ema_reloads=(6, 8), continue_at=(6, 8), keep_decoder_at=(8,))
    record = train("tiny_sd", cfg, out_dir=tmp_path / "ck", runs_dir=tmp_path / "runs", progress=False)
    vae = lambda folder: {k: v for k, v in _weights(folder).items() if k.startswith("vae/")}
    at6, at8, at10 = vae(tmp_path / "runs" / "step_6"), vae(tmp_path / "runs" / "step_8"), vae(tmp_path / "ck")
    assert at6.keys() == at8.keys() and all(torch.equal(at6[k], at8[k]) for k in at6)      # stage 4 skipped at 8
    assert any(not torch.equal(at8[k], at10[k]) for k in at8)                              # and run at 10
    kept = json.loads((tmp_path / "runs" / "step_8" / "training.json").read_text())
    assert kept["decoder_kept_at_step"] == 8 and kept["unet_steps"] == 8
    assert record["decoder_kept_at_step"] == 8 and record["unet_steps"] == 10           # the lineage, as widened_at_step
    stage4 = lambda folder: [r for r in read_history(folder / "history.csv") if r["stage"] == 4]
    assert stage4(tmp_path / "runs" / "step_8") == stage4(tmp_path / "runs" / "step_6") != []


def test_refine_loss_adds_the_colour_and_hue_terms_to_stage1s() -> None:
    from playground.latent.components import build_components, get_config

    vae = build_components(get_config("test"), seed=0)["vae"]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    base = preset("test")
    loss, terms = refine_loss(vae, x, torch.Generator().manual_seed(0), base)
    none, _ = refine_loss(vae, x, torch.Generator().manual_seed(0),
                          preset("test", refine_colour_weight=0.0, refine_hue_weight=0.0))
    assert terms["colour_l1"] > 0 and terms["hue_l1"] > 0
    expected = (base.refine_colour_weight * terms["colour_l1"] + base.refine_hue_weight * terms["hue_l1"])
    assert float((loss - none).detach()) == pytest.approx(expected, rel=1e-4)


def test_guided_pairs_are_deterministic_and_cover_every_strength_and_scale(trained: tuple[Path, dict]) -> None:
    root, _ = trained
    cfg = preset("test")
    pipe = img2img_pipeline(dict(load_pipeline(root / "checkpoints" / "tiny_sd").components))
    z1, x1 = pair_chunk(cfg, pipe, 3)
    z2, x2 = pair_chunk(cfg, pipe, 3)
    assert z1.shape == (cfg.guided_pair_batch, 4, 16, 16) and x1.shape == (cfg.guided_pair_batch, 3, 64, 64)
    assert x1.dtype == torch.uint8 and torch.equal(x1, x2) and torch.equal(z1, z2)
    assert not torch.equal(pair_chunk(cfg, pipe, 4)[1], x1)
    combos = {_chunk_setting(cfg, k) for k in range(len(cfg.guided_strengths) * len(cfg.guided_scales))}
    assert combos == {(s, g) for s in cfg.guided_strengths for g in cfg.guided_scales}


def test_guided_pairs_made_by_other_weights_are_rebuilt(trained: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = trained
    cfg = preset("test")
    parts = dict(load_pipeline(root / "checkpoints" / "tiny_sd").components)
    path = tmp_path / "guided_pairs.pt"
    first = build_guided_pairs(cfg, parts, path, progress=False)
    cached = build_guided_pairs(cfg, parts, path, progress=False)
    assert torch.equal(first["latents"], cached["latents"]) and cached["seconds"] == first["seconds"]
    with torch.no_grad():
        parts["unet"].conv_in.weight.add_(0.5)                                     # another U-Net
    rebuilt = build_guided_pairs(cfg, parts, path, progress=False)
    assert not torch.equal(rebuilt["latents"], first["latents"])
    assert torch.equal(rebuilt["images"], first["images"])                          # the same scenes


def test_colour_term_weighs_region_colour_not_pixel_noise() -> None:
    x = torch.zeros(1, 3, 32, 32)
    assert torch.allclose(gaussian_blur(torch.full_like(x, 0.3), 1.5), torch.full_like(x, 0.3), atol=1e-6)
    checker = (torch.arange(32).view(-1, 1) + torch.arange(32).view(1, -1)) % 2 * 2.0 - 1.0   # ±1, zero mean
    noisy = x + 0.2 * checker.expand_as(x)
    shifted = x + 0.2                                    # the same |error| per pixel, all one way: a colour shift
    assert (noisy - x).abs().mean() == pytest.approx((shifted - x).abs().mean())
    assert colour_l1(noisy, x, 1.5) < 0.02 * colour_l1(shifted, x, 1.5)
    assert colour_l1(shifted, x, 1.5) == pytest.approx(0.2, rel=1e-5)


def _hsv_image(h: float, s: float, v: float, size: int = 16) -> torch.Tensor:
    """A flat (1, 3, size, size) image of one HSV colour, in [-1, 1]."""
    import colorsys

    rgb = torch.tensor(colorsys.hsv_to_rgb((h % 360) / 360, s, v)) * 2 - 1
    return rgb.view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_hue_term_weighs_a_hue_shift_alike_however_dark_the_colour() -> None:
    bright, dark = (0.0, 1.0, 1.0), (0.0, 0.7, 0.62)                  # red at the scenes' extremes of S and V
    shifted = {c: hue_l1(_hsv_image(10, *c[1:]), _hsv_image(*c), 1.0) for c in (bright, dark)}
    absolute = {c: colour_l1(_hsv_image(10, *c[1:]), _hsv_image(*c), 1.0) for c in (bright, dark)}
    assert absolute[dark] < 0.5 * absolute[bright]                    # the absolute term barely sees the dark shift
    assert float(shifted[dark]) == pytest.approx(float(shifted[bright]), rel=1e-4)   # the relative one: alike
    assert 0.15 < float(shifted[bright]) < 0.3                        # ≈ 2 sin(5°) · (|cos| + |sin|) of the chroma
    assert float(hue_l1(_hsv_image(0, *bright[1:]), _hsv_image(*bright), 1.0)) == 0.0
    grey = torch.zeros(1, 3, 16, 16)                                  # no hue: any change to it is left out
    assert float(hue_l1(grey + 0.3, grey, 1.0)) == 0.0
