"""DiffusionService on a tiny randomly initialised U-Net saved as train._finish saves a checkpoint:
forward process, schedule curves, validation messages, streamed denoising, DDPM vs DDIM in lockstep,
stopping. Every test takes a few seconds at most (a 1000-step DDPM run of the tiny net is about 1 s)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from playground.core.checkpoint import save_weights, write_json
from playground.core.errors import UserInputError
from playground.core.images import pil_to_tensor
from playground.core.registry import ModelRegistry
from playground.core.seeding import make_generator
from playground.core.settings import REPO_ROOT, Settings
from playground.data import mnist
from playground.diffusion.model import UNet, UNetConfig
from playground.diffusion.sampler import sample_images
from playground.diffusion.service import DDPM_MAX_SAMPLES, DIFFUSION_MODELS, DiffusionService, build_sampler

torch.set_num_threads(1)


def _tiny_unet() -> UNet:
    """2 levels, no attention; every weight random (the real init zeroes the output layer, so ε̂ = 0)."""
    model = UNet(UNetConfig(channels=(8, 16), emb_dim=16, groups=4, heads=2, attention=False)).eval()
    g = make_generator(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def save_tiny_checkpoint(folder: Path) -> UNet:
    """The files train._finish writes and train.load_denoiser reads: model.safetensors + config.json."""
    model = _tiny_unet()
    save_weights(folder, model.state_dict())
    write_json(folder / "config.json", {"model": model.cfg.to_dict(), "train": {"epochs": 0},
                                        "schedule": {"kind": "linear", "timesteps": 1000}})
    write_json(folder / "training.json", {"name": folder.name, "wall_minutes": 0.0})
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diffusion") / "checkpoints"
    save_tiny_checkpoint(root / DIFFUSION_MODELS["unet"][0])
    return root


@pytest.fixture(scope="module")
def svc(ckpt: Path) -> DiffusionService:
    return DiffusionService(Settings(device="cpu", checkpoints_dir=ckpt), ModelRegistry())


def _run(gen) -> list[dict]:
    return list(gen)


def _pixels(img) -> torch.Tensor:
    return pil_to_tensor(img)


# ----------------------------------------------------------------------------- models, forward
def test_available_models_and_load_once(svc):
    assert svc.available() == ["unet"]
    a, b = svc.model("unet"), svc.model("unet")
    assert a is b and svc.registry.load_counts["diffusion/unet"] == 1
    assert a.schedule.timesteps == 1000 and a.null_label == 10 and not a.net.training


def test_forward_process_ends_and_shapes(svc):
    digit = mnist.digits("test").x[17, 0]
    start, end = svc.forward_process(17, 0, 3), svc.forward_process(17, 999, 3)
    for kind in ("linear", "cosine"):
        x_start = _pixels(start[kind]["x_t"])[0]
        assert start[kind]["x_t"].size == (28, 28) and start[kind]["x_t"].mode == "L"
        assert float((x_start - digit).abs().max()) < 0.05                  # t = 0: the digit
        assert start[kind]["alpha_bar"] > 0.999 and end[kind]["alpha_bar"] < 1e-3
        x_end, noise = _pixels(end[kind]["x_t"])[0], _pixels(end["noise"])[0]
        assert float((x_end - noise).abs().max()) < 0.05                    # t = 999: the noise ε
        assert math.isclose(end[kind]["snr"], end[kind]["alpha_bar"] / (1 - end[kind]["alpha_bar"]), rel_tol=1e-3)
    assert start["label"] == int(mnist.digits("test").y[17])
    mid = svc.forward_process(17, 500, 3)
    assert mid["linear"]["alpha_bar"] < mid["cosine"]["alpha_bar"]          # cosine destroys signal later
    assert _pixels(mid["linear"]["x_t"]).ne(_pixels(mid["cosine"]["x_t"])).any()
    same = svc.forward_process(17, 500, 3)
    assert torch.equal(_pixels(same["linear"]["x_t"]), _pixels(mid["linear"]["x_t"]))


@pytest.mark.parametrize("kwargs, message", [({"digit": 1000}, "test digit"), ({"digit": -1}, "test digit"),
                                             ({"t": 1000}, "t must be"), ({"t": 2.5}, "whole number"),
                                             ({"seed": -3}, "seed")])
def test_forward_process_bad_input(svc, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        svc.forward_process(**({"digit": 0, "t": 10, "seed": 0} | kwargs))


def test_schedule_curves_are_monotone(svc):
    rows = svc.schedule_curves()
    for kind in ("linear", "cosine"):
        mine = [r for r in rows if r["schedule"] == kind]
        ts = [r["t"] for r in mine]
        assert ts[0] == 0 and ts[-1] == 999 and ts == sorted(ts) and len(mine) == 201
        ab = [r["alpha_bar"] for r in mine]
        snr = [r["log10_snr"] for r in mine]
        assert all(a > b for a, b in zip(ab, ab[1:])) and all(a > b for a, b in zip(snr, snr[1:]))
        assert all(math.isfinite(v) for v in snr)


# ----------------------------------------------------------------------------------- validation
GOOD = {"sampler": "ddim", "steps": 20, "eta": 0.0, "seed": 0, "label": 3, "guidance_scale": 3.0, "n": 2,
        "model": "unet"}


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be between 1 and 1000"),
    ({"steps": -5}, "steps must be between 1 and 1000"),
    ({"steps": 5000}, "steps must be between 1 and 1000"),
    ({"steps": 12.5}, "steps must be a whole number"),
    ({"sampler": "ddpm", "steps": 0}, "steps must be between"),
    ({"eta": 1.5}, r"eta \(η\) must be between 0 and 1"),
    ({"eta": -0.1}, "eta"),
    ({"guidance_scale": float("nan")}, "guidance scale must be a finite number"),
    ({"guidance_scale": 1e9}, "guidance scale must be between 0 and 20"),
    ({"guidance_scale": "lots"}, "guidance scale must be a number"),
    ({"label": 10}, "label must be between -1 and 9"),
    ({"label": -2}, "label"),
    ({"n": 0}, "number of images"),
    ({"n": 65}, "number of images must be between 1 and 64"),
    ({"sampler": "ddpm", "n": DDPM_MAX_SAMPLES + 1}, "DDPM runs all 1000 steps"),
    ({"model": "vae"}, "Unknown model 'vae'"),
    ({"model": "dit"}, "DiT denoiser is not trained yet"),
    ({"sampler": "plms"}, "Unknown sampler 'plms'"),
    ({"seed": -1}, "seed"),
])
def test_bad_input_is_refused_with_a_clear_message(svc, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        svc.validate(**(GOOD | kwargs))
    with pytest.raises(UserInputError, match=message):                      # the stream raises before any work
        next(svc.denoise(**(GOOD | kwargs)))


def test_validate_normalises(svc):
    req = svc.validate(**(GOOD | {"sampler": "ddpm", "steps": 37, "label": None, "n": "2"}))
    assert req.steps == 1000 and req.label == -1 and req.n == 2             # DDPM ignores steps
    with pytest.raises(UserInputError, match="sampler to compare"):
        next(svc.compare(right="ddpm"))


# ------------------------------------------------------------------------------------- denoise
def test_denoise_streams_frames_in_order_and_ends_with_n_images(svc):
    items = _run(svc.denoise(**GOOD, frame_seconds=0.0))
    frames, done = items[:-1], items[-1]
    assert [f["kind"] for f in frames] == ["frame"] * 20 and done["kind"] == "done"
    assert [f["step"] for f in frames] == list(range(1, 21)) and frames[0]["total"] == 20
    ts = [f["t"] for f in frames]
    assert ts == sorted(ts, reverse=True) and ts[0] == 951 and ts[-1] == 1   # DDIM, leading + offset 1
    assert frames[0]["x_t"].mode == "L" and frames[0]["x0"].size == frames[0]["x_t"].size
    assert frames[-1]["eta_s"] == 0 and all(f["elapsed"] >= 0 for f in frames)
    assert len(done["images"]) == 2 and all(im.size == (28, 28) and im.mode == "L" for im in done["images"])
    assert done["steps"] == 20 and done["network_calls"] == 20 and done["network_evaluations"] == 20 * 2 * 2
    assert done["trajectory"] is not None and done["trajectory_x0"] is not None and len(done["trajectory_t"]) == 8
    assert done["seconds"] >= done["sampler_seconds"] > 0


def test_denoise_throttles_frames_to_first_and_last(svc):
    frames = [f for f in svc.denoise(**GOOD, frame_seconds=1e9) if f["kind"] == "frame"]
    assert [f["step"] for f in frames] == [1, 20]


def test_same_seed_same_images_and_equal_to_the_sampler_loop(svc):
    def images(**kw) -> torch.Tensor:
        done = _run(svc.denoise(**(GOOD | kw), frame_seconds=1e9))[-1]
        return torch.stack([_pixels(im) for im in done["images"]])

    a, b, c = images(), images(), images(seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    m = svc.model("unet")
    ref = sample_images(m.net, sampler=build_sampler("ddim", m.schedule, 20), steps=20, n=2, labels=3,
                        guidance_scale=3.0, seed=0, schedule=m.schedule, null_label=10).images
    ref_pixels = torch.stack([_pixels(im) for im in
                              _run(svc.denoise(**GOOD, frame_seconds=1e9))[-1]["images"]])
    assert torch.equal(a, ref_pixels)
    assert float((a - ((ref + 1) / 2).clamp(0, 1)).abs().max()) <= 1 / 255 + 1e-6


def test_ddpm_runs_all_1000_steps(svc):
    done = _run(svc.denoise(**(GOOD | {"sampler": "ddpm", "steps": 10, "label": -1, "n": 1})))[-1]
    assert done["steps"] == 1000 and done["network_calls"] == 1000
    assert done["network_evaluations"] == 1000                              # unconditional: one pass


@pytest.mark.parametrize("sampler", ["dpm++", "euler"])
def test_diffusers_solvers_stream_too(svc, sampler):
    items = _run(svc.denoise(**(GOOD | {"sampler": sampler, "steps": 6}), frame_seconds=0.0))
    assert [f["step"] for f in items[:-1]] == list(range(1, 7)) and items[-1]["steps"] == 6
    assert all(torch.isfinite(_pixels(im)).all() for im in items[-1]["images"])


def test_stop_ends_denoise_with_a_stopped_item(svc):
    seen: list[dict] = []
    gen = svc.denoise(**(GOOD | {"sampler": "ddpm", "n": 1}), should_stop=lambda: len(seen) >= 3,
                      frame_seconds=0.0)
    for item in gen:
        seen.append(item)
    assert [s["kind"] for s in seen] == ["frame", "frame", "frame", "stopped"]
    stopped = seen[-1]
    assert stopped["step"] == 3 and stopped["total"] == 1000 and len(stopped["images"]) == 1


# ------------------------------------------------------------------------------------- compare
@pytest.mark.parametrize("right", ["ddim", "euler"])
def test_compare_runs_ddpm_and_rival_in_lockstep(svc, right):
    args = {"steps": 20, "eta": 0.5, "seed": 4, "label": 7, "guidance_scale": 2.0, "n": 2, "model": "unet"}
    items = _run(svc.compare(**args, right=right, frame_seconds=0.0))
    frames, done = items[:-1], items[-1]
    assert len(frames) == 1000 and done["kind"] == "done"
    assert [f["ddpm"]["step"] for f in frames] == list(range(1, 1001))
    right_steps = [f["right"]["step"] for f in frames]
    assert right_steps == sorted(right_steps) and right_steps[-1] == 20
    gap = 1000 / (20 - 1) + 1                 # the widest spacing of 20 steps (Euler's linspace 999 … 0)
    for f in frames:                          # the rival's last step is at the same noise level or just above
        if f["right"]["t"] is not None:
            assert 0 <= f["right"]["t"] - f["ddpm"]["t"] < gap
        else:
            assert f["right"]["x0"] is None and f["right"]["step"] == 0
    a, b = done["ddpm"], done["right"]
    assert a["steps"] == 1000 and a["network_calls"] == 1000 and b["steps"] == 20 and b["network_calls"] == 20
    assert a["seconds"] > 0 and b["seconds"] > 0 and done["seconds"] >= a["seconds"] + b["seconds"]
    assert len(a["images"]) == len(b["images"]) == 2 and a["trajectory"] is not None and b["trajectory"] is not None
    # same initial noise: each lane equals the same sampler run alone with the same seed
    alone = _run(svc.denoise(sampler=right, **args, frame_seconds=1e9))[-1]
    assert all(torch.equal(_pixels(x), _pixels(y)) for x, y in zip(alone["images"], b["images"]))
    first = frames[0]                         # both panels start from x_T (Euler's input is σ-rescaled: ≈ x_T)
    assert float((_pixels(first["ddpm"]["x_t"]) - _pixels(first["right"]["x_t"])).abs().max()) <= 2 / 255


def test_stop_ends_compare_cleanly(svc):
    count = {"n": 0}

    def stop() -> bool:
        count["n"] += 1
        return count["n"] > 5

    items = _run(svc.compare(steps=10, seed=0, n=1, should_stop=stop, frame_seconds=0.0))
    assert items[-1]["kind"] == "stopped" and [i["kind"] for i in items[:-1]] == ["frame"] * 5
    assert items[-1]["ddpm"]["steps"] == 5 and items[-1]["right"]["steps"] == 0


def test_bf16_runs(svc):
    done = _run(svc.denoise(**GOOD, frame_seconds=1e9, bf16=True))[-1]
    assert len(done["images"]) == 2


# -------------------------------------------------------------------------------------- report
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_report_quick_on_the_tiny_model(ckpt, tmp_path):
    """The card pipeline end to end at N = 2 (quality rows, reference, card, row cache); the speed
    figures' pieces on small sizes."""
    from playground.diffusion import report

    root = tmp_path / "checkpoints"
    shutil.copytree(ckpt / "diffusion_unet", root / "diffusion_unet")
    shutil.copytree(REPO_ROOT / "checkpoints" / "classifier", root / "classifier")
    metrics = report.evaluate_and_card("diffusion_unet", root, n=2, quick=True, progress=False, speed=False)
    rows = metrics["steps_vs_quality"]
    assert len(rows) == 14 and {r["sampler"] for r in rows} == {"ddim", "dpm++", "ddpm"}
    assert all(r["n"] == 2 and math.isfinite(r["frechet_distance"]) for r in rows)
    assert {r["network_evaluations_per_image"] for r in rows if r["sampler"] == "ddpm"} == {1000, 2000}
    assert "ddim50_over_ddpm1000_fd_ratio_g3" in metrics and metrics["reference_real_digits"]["n"] == 2
    card = (root / "diffusion_unet" / "README.md").read_text()
    assert "Steps vs quality" in card and "python -m playground evaluate diffusion_unet" in card
    assert (root / "diffusion_unet" / "metrics.json").exists()
    cached = sorted((tmp_path / "runs" / "diffusion_unet" / "eval").rglob("*.pt"))
    assert len(cached) == 14                  # an interrupted evaluate resumes from these

    def boom() -> torch.Tensor:
        raise AssertionError("a cached row was sampled again")

    x, _, hit = report.cached_generate(cached[0].parent, cached[0].stem, boom)
    assert hit and x.shape == (2, 1, 28, 28)
    # speed pieces, small
    m = DiffusionService(Settings(device="cpu", checkpoints_dir=root), ModelRegistry()).model("unet")
    fwd = report.forward_throughput(m.net, batch=4, repeats=1, compile=False)   # compiling takes a minute
    assert fwd["gflop_per_forward"] > 0 and fwd["fp32_fraction_of_peak"] > 0 and "channels_last_bf16_ms" in fwd
    assert fwd["torch_compile_error"] == "RuntimeError: not requested" and "torch_compile_ms" not in fwd
    vs = report.ddim_vs_diffusers(m.net, m.schedule, 10, steps=5, n=2, repeats=1)
    assert vs["max_abs_image_difference"] <= 1e-4 and vs["ratio_ours_over_diffusers"] > 0
    assert report.sampling_seconds(m.net, m.schedule, 10, "ddim", 5, 2, 3.0, repeats=1) > 0
