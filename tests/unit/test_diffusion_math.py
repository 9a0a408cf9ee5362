"""Diffusion math against diffusers and against the papers' formulas; seeded sampling; tiny training.

Every test uses tiny randomly initialised networks and a few steps: each runs in well under 5 s."""
from __future__ import annotations

import threading

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from playground.core.checkpoint import load_weights, read_history, read_json
from playground.core.seeding import make_generator, randn
from playground.core.training import load_resume
from playground.diffusion.model import DiT, DiTConfig, UNet, UNetConfig, build, config_from_dict, count_params
from playground.diffusion.sampler import (DDIMSampler, DDPMSampler, DiffusersSampler, Frame, SampleResult,
                                          cfg_combine, ddpm_mean_eq11, guided_eps, initial_noise, make_sampler,
                                          sample, sample_images, spaced_timesteps)
from playground.diffusion.schedule import make_schedule
from playground.diffusion.train import DiffusionTrainConfig, diffusion_loss, load_denoiser, preset, train

KINDS = ("linear", "cosine")
TOL = 1e-5


def _gens(seed: int, n: int) -> list[torch.Generator]:
    return [make_generator(seed + i) for i in range(n)]


def _inputs(seed: int = 0, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A model output ε̂ and a sample x_t, large enough that clipping of x̂_0 happens at some t."""
    g = make_generator(seed)
    return torch.randn(n, 1, 28, 28, generator=g), 1.5 * torch.randn(n, 1, 28, 28, generator=g)


def _tiny_unet(seed: int = 0) -> UNet:
    """A 2-level U-Net whose weights are all random (the real init zeroes the output layer)."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(channels=(8, 16), emb_dim=16, groups=4, heads=2)).eval()
    g = make_generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _diffusers_kwargs(kind: str) -> dict:
    return make_schedule(kind).diffusers_config()


# ----------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("kind", KINDS)
def test_alpha_bar_and_posterior_variance_equal_diffusers(kind):
    s = make_schedule(kind)
    ref = DDPMScheduler(**_diffusers_kwargs(kind))
    assert torch.equal(s.betas, ref.betas) and torch.equal(s.alpha_bars, ref.alphas_cumprod)
    for t in (1, 10, 500, 999):
        assert abs(float(s.posterior_variance[t]) - float(ref._get_variance(t))) <= 1e-7
    assert float(s.betas.max()) <= float(torch.tensor(0.999)) and bool((s.snr[1:] < s.snr[:-1]).all())  # SNR falls
    if kind == "linear":
        assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
        assert float(s.alpha_bars[-1]) < 1e-4                               # x_T is almost pure noise


def test_cosine_alpha_bar_follows_nichol_dhariwal_eq17():
    import math

    s = make_schedule("cosine")
    f = [math.cos(((t + 1) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
         for t in range(1000)]
    assert torch.allclose(s.alpha_bars[:990], torch.tensor(f[:990]), atol=1e-5)  # the last ones feel the 0.999 clip


@pytest.mark.parametrize("kind", KINDS)
def test_q_sample_statistics(kind):
    s = make_schedule(kind)
    x0 = torch.linspace(-1, 1, 784).reshape(1, 1, 28, 28)
    n = 4000
    g = make_generator(0)
    for t in (10, 300, 999):
        noise = torch.randn(n, 1, 28, 28, generator=g)
        xt = s.q_sample(x0.expand(n, -1, -1, -1), torch.full((n,), t), noise)
        ab = float(s.alpha_bars[t])
        mean, var = xt.mean(0), xt.var(0)
        assert float((mean - ab ** 0.5 * x0[0]).abs().max()) < 5 * ((1 - ab) / n) ** 0.5
        assert float(var.mean()) == pytest.approx(1 - ab, rel=0.02)
        ref = DDPMScheduler(**_diffusers_kwargs(kind)).add_noise(x0.expand(n, -1, -1, -1), noise,
                                                                 torch.full((n,), t))
        assert torch.allclose(xt, ref, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_eps_loss_at_the_two_ends(kind):
    """t = T-1: x_t is nearly pure noise, so "ε̂ = x_t" is almost a perfect prediction. t = 0: x_t is
    nearly x_0 (1% noise) and that same guess is far off: all the loss is in recovering a tiny ε."""
    s = make_schedule(kind)
    identity = lambda x, t, y: x  # noqa: E731
    x0 = randn((64, 1, 28, 28), seed=1).clamp(-1, 1)
    y = torch.zeros(64, dtype=torch.long)
    noise = randn((64, 1, 28, 28), seed=2)
    last, first = torch.full((64,), s.timesteps - 1), torch.zeros(64, dtype=torch.long)
    assert float(diffusion_loss(identity, s, x0, y, last, noise)) < 1e-3
    assert float(diffusion_loss(identity, s, x0, y, first, noise)) > 0.3
    assert float((s.q_sample(x0, first, noise) - x0).abs().max()) < 0.1
    zero = lambda x, t, y: torch.zeros_like(x)  # noqa: E731
    assert float(diffusion_loss(zero, s, x0, y, first, noise)) == pytest.approx(float(noise.pow(2).mean()))


# ---------------------------------------------------------------------------- step parity: DDPM
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_equals_diffusers(kind, clip):
    s = make_schedule(kind)
    ours = DDPMSampler(s, clip_sample=clip)
    ref = DDPMScheduler(**_diffusers_kwargs(kind), clip_sample=clip)
    eps, x = _inputs(seed=3)
    for t in (999, 700, 250, 10, 1, 0):
        a = ours.step(eps, t, x, noise=_gens(100 + t, 3))
        b = ref.step(eps, t, x, generator=_gens(100 + t, 3))
        assert float((a.prev_sample - b.prev_sample).abs().max()) <= TOL, t
        assert float((a.pred_original_sample - b.pred_original_sample).abs().max()) <= TOL, t


@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_with_fewer_steps_equals_diffusers(kind):
    s = make_schedule(kind)
    ours, ref = DDPMSampler(s), DDPMScheduler(**_diffusers_kwargs(kind))
    ours.set_timesteps(25)
    ref.set_timesteps(25)
    assert torch.equal(ours.timesteps, ref.timesteps)
    eps, x = _inputs(seed=4)
    for t in ours.timesteps.tolist()[::6] + [0]:
        a = ours.step(eps, t, x, noise=_gens(t, 3))
        b = ref.step(eps, torch.tensor(t), x, generator=_gens(t, 3))
        assert float((a.prev_sample - b.prev_sample).abs().max()) <= TOL, t


@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_mean_is_eq11_when_x0_is_not_clipped(kind):
    s = make_schedule(kind)
    x0 = randn((3, 1, 28, 28), seed=5).clamp(-1, 1)
    noise = randn((3, 1, 28, 28), seed=6)
    for t in (999, 400, 3):
        x = s.q_sample(x0, t, noise)                                        # a realistic x_t and ε̂ ≈ ε
        eps = noise + 0.1 * randn((3, 1, 28, 28), seed=t)
        out = DDPMSampler(s, clip_sample=False).step(eps, t, x, noise=torch.zeros_like(x))
        # 1e-4, not 1e-5: the eq. 7 route (diffusers') recovers β_t as 1 − ᾱ_t/ᾱ_{t-1}, which loses
        # about three float32 digits where β_t ~ 4e-5 (cosine schedule, t < 10)
        assert float((out.prev_sample - ddpm_mean_eq11(s, eps, t, x)).abs().max()) <= 1e-4, t


# ---------------------------------------------------------------------------- step parity: DDIM
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("offset", [0, 1])
def test_ddim_step_equals_diffusers(kind, eta, offset):
    s = make_schedule(kind)
    ours = DDIMSampler(s, eta=eta, steps_offset=offset)
    ref = DDIMScheduler(**_diffusers_kwargs(kind), steps_offset=offset)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    assert torch.equal(ours.timesteps, ref.timesteps)
    eps, x = _inputs(seed=6)
    for t in [int(v) for v in ours.timesteps[::12]] + [int(ours.timesteps[-1])]:
        z = randn(tuple(x.shape), seed=t)
        a = ours.step(eps, t, x, noise=z)
        b = ref.step(eps, t, x, eta=eta, variance_noise=z)
        assert float((a.prev_sample - b.prev_sample).abs().max()) <= TOL, t
        assert float((a.pred_original_sample - b.pred_original_sample).abs().max()) <= TOL, t


def test_ddim_without_clipping_and_with_clipped_eps_equals_diffusers():
    s = make_schedule("linear")
    eps, x = _inputs(seed=7)
    for clip, use_clipped in ((False, False), (True, True)):
        ours = DDIMSampler(s, eta=0.3, clip_sample=clip, use_clipped_model_output=use_clipped)
        ref = DDIMScheduler(**_diffusers_kwargs("linear"), clip_sample=clip, steps_offset=1)
        ours.set_timesteps(20)
        ref.set_timesteps(20)
        z = randn(tuple(x.shape), seed=9)
        for t in (951, 501, 1):
            a = ours.step(eps, t, x, noise=z)
            b = ref.step(eps, t, x, eta=0.3, use_clipped_model_output=use_clipped, variance_noise=z)
            assert float((a.prev_sample - b.prev_sample).abs().max()) <= TOL


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_spacings_equal_diffusers(spacing):
    for steps in (10, 20, 50, 100, 250, 1000):
        ref = DDIMScheduler(timestep_spacing=spacing)
        ref.set_timesteps(steps)
        assert torch.equal(spaced_timesteps(1000, steps, spacing), ref.timesteps), (spacing, steps)
    assert spaced_timesteps(1000, 50, "leading", offset=1).tolist()[:2] == [981, 961]
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 1000, "leading", offset=1)                   # would reach t = 1000
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 0)


# ------------------------------------------------------------------------ guidance and models
def test_cfg_scale_one_is_the_conditional_prediction():
    model = _tiny_unet()
    x, t = randn((4, 1, 28, 28), seed=0), torch.tensor([5, 200, 600, 999])
    y = torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 10))
        assert torch.equal(guided_eps(model, x, t, y, 1.0, 10), cond)
        assert torch.allclose(cfg_combine(uncond, cond, 1.0), cond, atol=1e-6)
        assert torch.equal(guided_eps(model, x, t, y, 0.0, 10), uncond)
        # s = 3 runs both passes in one batch of 8 and combines them as ε_u + s (ε_c − ε_u)
        assert torch.allclose(guided_eps(model, x, t, y, 3.0, 10), uncond + 3.0 * (cond - uncond), atol=1e-5)
        assert not torch.allclose(cond, uncond, atol=1e-3)                 # the label does matter


def test_model_shapes_and_sizes():
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([0.0, 10.5, 999.0]), torch.tensor([0, 5, 10])
    for cfg in (UNetConfig(), DiTConfig(), UNetConfig(merge="concat", channels=(16, 32), groups=4),
                DiTConfig(dim=32, depth=1, heads=2, patch=7)):
        model = build(cfg).eval()
        with torch.no_grad():
            out = model(x, t, y)
        assert out.shape == (3, 1, 28, 28) and torch.isfinite(out).all()
        assert count_params(model) * 4 < 10 * 2**20                        # fits a 10 MB safetensors file
        assert type(build(config_from_dict(cfg.to_dict()))) is type(model)
    dit = DiT(DiTConfig())
    assert dit.cfg.grid ** 2 == 49
    patches = dit.patch_embed.weight.new_zeros(1, 49, 16)
    patches[0, 8, 5] = 1.0                                                  # token (1, 1), pixel (1, 1) of the patch
    img = dit.unpatchify(patches)
    assert img.shape == (1, 1, 28, 28) and img[0, 0, 4 + 1, 4 + 1] == 1.0 and img.sum() == 1.0


# ------------------------------------------------------------------------------- sampling loop
@pytest.mark.parametrize("name,steps,eta", [("ddim", 5, 0.5), ("ddpm", 8, 0.0), ("ddim", 4, 0.0)])
def test_sampling_is_seeded_and_independent_of_n(name, steps, eta):
    model = _tiny_unet()
    kw = dict(sampler=name, steps=steps, eta=eta, labels=3, guidance_scale=2.0, seed=11)
    one = sample_images(model, n=1, **kw).images
    again = sample_images(model, n=1, **kw).images
    four = sample_images(model, n=4, **kw).images
    other = sample_images(model, n=1, **{**kw, "seed": 12}).images
    assert torch.equal(one, again)
    # row 0 gets exactly the same noise for n = 1 and n = 4; only the network's float rounding may
    # differ with the batch size (oneDNN picks kernels per shape: ~3e-7 per forward)
    assert torch.allclose(four[:1], one, atol=1e-3)
    assert not torch.allclose(one, other, atol=1e-3)
    assert four.shape == (4, 1, 28, 28) and torch.isfinite(four).all()


def test_initial_noise_is_core_seeding_noise():
    x, gens = initial_noise(5, seed=42)
    assert torch.equal(x, randn((5, 1, 28, 28), seed=42)) and len(gens) == 5


def test_frames_stream_in_order_and_end_with_result():
    model = _tiny_unet()
    items = list(sample(model, "ddim", steps=10, n=2, labels=[1, None], guidance_scale=3.0, seed=0, every=3))
    frames, result = items[:-1], items[-1]
    assert all(isinstance(f, Frame) for f in frames) and isinstance(result, SampleResult)
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert [f.t for f in frames] == [901.0, 601.0, 301.0, 1.0]
    assert frames[0].x_t.shape == frames[0].x0.shape == (2, 1, 28, 28)
    assert torch.equal(frames[0].x_t, randn((2, 1, 28, 28), seed=0))       # x_T is the seeded noise
    assert float(frames[-1].x0.abs().max()) <= 1.0                          # DDIM clips x̂_0
    assert not result.stopped and result.steps_done == 10 and len(result.timesteps) == 10


def test_bf16_autocast_keeps_the_sampler_in_float32():
    model = _tiny_unet()
    kw = dict(sampler="ddim", steps=3, n=2, labels=5, guidance_scale=2.0, seed=0)
    half, full = sample_images(model, bf16=True, **kw).images, sample_images(model, **kw).images
    assert half.dtype == torch.float32 and torch.isfinite(half).all() and not torch.equal(half, full)


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_our_loops_equal_diffusers_scheduler_loops(name):
    """Whole runs, seeded the same way: DDPM's per-step noise comes from the same per-row generators."""
    model, s = _tiny_unet(), make_schedule("cosine")
    if name == "ddim":
        ref = DiffusersSampler(s, DDIMScheduler(**s.diffusers_config(), steps_offset=1), "ddim",
                               step_kwargs={"use_clipped_model_output": True})   # our DDIM default
    else:
        ref = DiffusersSampler(s, DDPMScheduler(**s.diffusers_config()), "ddpm", stochastic=True)
    kw = dict(steps=10, n=2, labels=[4, None], guidance_scale=2.0, seed=5)
    a = sample_images(model, sampler=make_sampler(name, s), **kw)
    b = sample_images(model, sampler=ref, **kw)
    assert float((a.images - b.images).abs().max()) <= TOL


def test_default_ddim_rederives_eps_from_the_clipped_x0():
    """make_sampler's DDIM re-derives ε̂ after clipping (diffusers' use_clipped_model_output=True), and so
    differs from the scheduler's default once x̂_0 leaves [-1, 1]."""
    s = make_schedule("linear")
    eps, x = _inputs()
    ours = make_sampler("ddim", s)
    plain = DDIMSampler(s, steps_offset=1)                                   # diffusers' default step
    ours.set_timesteps(20), plain.set_timesteps(20)
    t = int(ours.timesteps[5])
    x0_raw = s.predict_x0(x, t, eps)
    assert float(x0_raw.abs().max()) > 1.0                                   # clipping does happen here
    a, b = ours.step(eps, t, x), plain.step(eps, t, x)
    assert torch.equal(a.pred_original_sample, b.pred_original_sample)
    assert float((a.prev_sample - b.prev_sample).abs().max()) > 1e-3
    ref = DDIMScheduler(**s.diffusers_config(), steps_offset=1)
    ref.set_timesteps(20)
    expect = ref.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    assert float((a.prev_sample - expect).abs().max()) <= TOL


@pytest.mark.parametrize("name", ["dpm++", "euler"])
def test_diffusers_solvers_run_through_the_same_interface(name):
    model = _tiny_unet()
    items = list(sample(model, name, steps=6, n=2, labels=2, guidance_scale=2.0, seed=0, every=1))
    frames, result = items[:-1], items[-1]
    assert len(frames) == 6 and result.steps_done == 6 and torch.isfinite(result.images).all()
    assert frames[0].x_t.std().item() == pytest.approx(1.0, abs=0.1)       # x_T shown in eq. 4's scale
    again = sample_images(model, sampler=name, steps=6, n=2, labels=2, guidance_scale=2.0, seed=0)
    assert torch.equal(result.images, again.images)


@pytest.mark.parametrize("as_event", [True, False])
def test_stop_signal_ends_the_loop(as_event):
    model = _tiny_unet()
    event = threading.Event()
    stop = event if as_event else event.is_set
    seen = []
    for item in sample(model, "ddpm", steps=1000, n=1, seed=0, should_stop=stop):
        seen.append(item)
        if isinstance(item, Frame) and item.index == 2:
            event.set()
    result = seen[-1]
    assert isinstance(result, SampleResult) and result.stopped and result.steps_done == 3
    assert len(seen) == 4 and result.images.shape == (1, 1, 28, 28)


def test_bad_sampling_arguments_raise():
    model = _tiny_unet()
    with pytest.raises(ValueError):
        next(sample(model, "ddim", steps=0))
    with pytest.raises(ValueError):
        next(sample(model, "ddim", steps=5, n=2, labels=[1, 2, 3]))
    with pytest.raises(ValueError):
        next(sample(model, "ddim", steps=5, labels=11))
    with pytest.raises(ValueError):
        next(sample(model, "ddim", steps=5, guidance_scale=float("nan")))
    with pytest.raises(AssertionError):
        make_sampler("ddim", make_schedule(), eta=1.5)


# -------------------------------------------------------------------------------------- training
def _tiny_cfg() -> DiffusionTrainConfig:
    return DiffusionTrainConfig(UNetConfig(channels=(8, 16), emb_dim=16, groups=4, heads=2, attention=False),
                                epochs=2, batch_size=64, train_items=256, warmup_steps=2, monitor_every=1, seed=3)


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    a = train("t", _tiny_cfg(), out_dir=tmp_path / "a" / "ckpt" / "t", progress=False)
    b = train("t", _tiny_cfg(), out_dir=tmp_path / "b" / "ckpt" / "t", progress=False)
    wa, wb = load_weights(tmp_path / "a" / "ckpt" / "t"), load_weights(tmp_path / "b" / "ckpt" / "t")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["final_loss"] == b["final_loss"] and a["steps"] == 8
    part = train("t", _tiny_cfg(), out_dir=tmp_path / "r" / "ckpt" / "t", progress=False, stop_after=1)
    assert part["interrupted_at_epoch"] == 1
    assert load_resume(tmp_path / "r" / "runs" / "t" / "last.pt")["step"] == 4
    train("t", _tiny_cfg(), out_dir=tmp_path / "r" / "ckpt" / "t", progress=False)
    wr = load_weights(tmp_path / "r" / "ckpt" / "t")
    assert all(torch.equal(wa[k], wr[k]) for k in wa)
    folder = tmp_path / "a" / "ckpt" / "t"
    assert [r["epoch"] for r in read_history(folder / "history.csv")] == [1, 2]
    assert read_json(folder / "config.json")["model"]["channels"] == [8, 16]
    model, schedule, _ = load_denoiser(folder)
    assert schedule.kind == "linear" and not model.training
    shipped = sample_images(model, sampler="ddim", steps=3, n=1, labels=1, guidance_scale=2.0)
    assert shipped.images.shape == (1, 1, 28, 28)


def test_presets():
    unet, dit = preset("diffusion_unet"), preset("diffusion_dit", depth=2, epochs=3)
    assert unet.model.kind == "unet" and unet.label_dropout == 0.1 and unet.ema >= 0.99
    assert dit.model.depth == 2 and dit.epochs == 3
    with pytest.raises(KeyError):
        preset("diffusion_nope")
