"""The live 2-D GAN: loss formulas, gradient penalty, data, budget, divergence, rendering, determinism."""
from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from playground.core.errors import UserInputError
from playground.gan.live import (
    DATASETS,
    LiveConfig,
    LiveGAN,
    bce_losses,
    gradient_penalty,
    mixture_centres,
    sample_data,
    wgan_losses,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny MLPs run fastest (and reproducibly) on one intra-op thread; restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _linear_critic(norm: float, in_features: int = 2) -> nn.Module:
    lin = nn.Linear(in_features, 1)
    with torch.no_grad():
        w = torch.arange(1.0, in_features + 1).reshape(1, -1)
        lin.weight.copy_(w / w.norm() * norm)
        lin.bias.fill_(0.3)
    return lin


# ------------------------------------------------------------------------------------ formulas

def test_gradient_penalty_is_zero_for_a_1_lipschitz_linear_critic_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 3
    gp1 = gradient_penalty(_linear_critic(1.0), real, fake, torch.Generator().manual_seed(1))
    gp3 = gradient_penalty(_linear_critic(3.0), real, fake, torch.Generator().manual_seed(1))
    assert gp1.detach().item() < 1e-10
    assert gp3.detach().item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-5)  # ||grad|| = 3 everywhere


def test_gradient_penalty_flattens_images_and_uses_the_given_generator():
    critic = nn.Sequential(nn.Flatten(), _linear_critic(1.0, in_features=16))
    real, fake = torch.rand(8, 1, 4, 4), torch.rand(8, 1, 4, 4)
    assert gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0)).detach().item() < 1e-10
    # a nonlinear critic: the penalty depends on eps, so it must follow the generator's seed
    torch.manual_seed(0)  # only for building the test's critic
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))
    a = gradient_penalty(mlp, real, fake, torch.Generator().manual_seed(5))
    b = gradient_penalty(mlp, real, fake, torch.Generator().manual_seed(5))
    c = gradient_penalty(mlp, real, fake, torch.Generator().manual_seed(6))
    assert a.item() == b.item() and a.item() != c.item()
    assert a.requires_grad  # it must be trainable (create_graph) for the critic update


def test_bce_losses_match_their_formulas():
    r, f = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 3.0])
    sp = lambda x: math.log1p(math.exp(x))  # softplus: -log sigmoid(-x)
    d_expected = (sp(-0.0) + sp(-2.0)) / 2 + (sp(-1.0) + sp(3.0)) / 2   # -E log D(x) - E log(1 - D(G(z)))
    g_expected = (sp(1.0) + sp(-3.0)) / 2                                 # -E log D(G(z))
    d, g = bce_losses(r, f)
    assert float(d) == pytest.approx(d_expected, rel=1e-6)
    assert float(g) == pytest.approx(g_expected, rel=1e-6)
    d, g = bce_losses(torch.tensor([200.0, -200.0]), torch.tensor([-200.0, 200.0]))
    assert math.isfinite(float(d)) and math.isfinite(float(g))  # logits, not probabilities


def test_wgan_losses_match_their_formulas():
    critic, gen = wgan_losses(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -0.5]))
    assert float(critic) == pytest.approx(0.0 - 2.0)   # E f(G(z)) - E f(x)
    assert float(gen) == pytest.approx(-0.0)           # -E f(G(z))


# ---------------------------------------------------------------------------------------- data

@pytest.mark.parametrize("name", [d for d in DATASETS if d != "custom"])
def test_datasets_are_seeded_and_inside_the_view(name):
    a = sample_data(name, 2000, torch.Generator().manual_seed(3))
    b = sample_data(name, 2000, torch.Generator().manual_seed(3))
    assert a.shape == (2000, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert (a.abs() <= 3).float().mean() > 0.999


def test_ring_points_sit_on_the_eight_centres():
    centres, std = mixture_centres("ring")
    x = sample_data("ring", 4000, torch.Generator().manual_seed(0)).numpy()
    d = np.linalg.norm(x[:, None] - centres[None], axis=2)
    assert len(centres) == 8 and np.allclose(np.linalg.norm(centres, axis=1), 2.0)
    assert (d.min(1) < 4 * std).mean() > 0.99
    assert np.bincount(d.argmin(1), minlength=8).min() > 350  # all eight used


def test_custom_points_are_jittered_copies():
    pts = [(1.0, 1.0), (-2.0, 0.5)]
    x = sample_data("custom", 500, torch.Generator().manual_seed(0), pts).numpy()
    d = np.linalg.norm(x[:, None] - np.array(pts)[None], axis=2).min(1)
    assert d.max() < 0.4 and d.mean() > 0.01


@pytest.mark.parametrize("points", [None, [], [(0.5, 0.5)], [(0.0, 0.0), (float("nan"), 1.0)],
                                    [(0.0, 0.0), (5.0, 1.0)], [(0.0, 0.0), "ab c"]])
def test_bad_custom_points_are_refused(points):
    with pytest.raises(UserInputError):
        sample_data("custom", 10, torch.Generator().manual_seed(0), points)
    with pytest.raises(UserInputError):
        LiveGAN(LiveConfig(dataset="custom", points=points))


def test_too_few_custom_points_say_draw_at_least_two():
    with pytest.raises(UserInputError, match="at least 2 points"):
        LiveConfig(dataset="custom", points=[(0.1, 0.2)]).validate()


# -------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("bad", [{"lr_g": 1e9}, {"lr_d": float("nan")}, {"lr_g": 0.0}, {"lr_d": "fast"},
                                 {"d_steps": 0}, {"d_steps": 11}, {"d_steps": 2.5}, {"loss": "hinge"},
                                 {"dataset": "mnist"}, {"batch_size": 0}, {"max_steps": 0},
                                 {"max_seconds": float("inf")}, {"seed": -1}])
def test_bad_config_values_are_refused(bad):
    with pytest.raises(UserInputError):
        LiveConfig(**bad).validate()


def test_validate_fills_the_recommended_defaults():
    bce, wgan = LiveConfig(loss="bce").validate(), LiveConfig(loss="wgan-gp").validate()
    assert bce.d_steps == 1 and bce.betas == (0.5, 0.999)
    assert wgan.d_steps >= 1 and wgan.betas[1] == 0.9
    assert LiveConfig(loss="bce", lr_g=3e-4).validate().lr_g == 3e-4


# ------------------------------------------------------------------------------------ training

def _mean_dist_to_ring(gan: LiveGAN) -> float:
    centres, _ = mixture_centres("ring")
    with torch.no_grad():
        x = gan.G(torch.randn(1000, gan.cfg.noise_dim, generator=torch.Generator().manual_seed(9))).numpy()
    return float(np.linalg.norm(x[:, None] - centres[None], axis=2).min(1).mean())


def test_training_moves_generated_points_toward_the_ring():
    gan = LiveGAN(LiveConfig(dataset="ring", loss="bce", seed=0))
    before = _mean_dist_to_ring(gan)
    stats = gan.step(300)
    after = _mean_dist_to_ring(gan)
    assert stats["step"] == 300 and not stats["done"]
    assert before > 1.5            # the untrained generator puts everything near the origin
    assert after < 0.6 * before, (before, after)
    assert stats["steps_per_second"] > 0 and stats["wasserstein"] is None


def test_wgan_gp_steps_report_a_wasserstein_estimate_and_history():
    gan = LiveGAN(LiveConfig(dataset="moons", loss="wgan-gp", seed=1, batch_size=64))
    stats = gan.step(25)
    assert math.isfinite(stats["wasserstein"]) and math.isfinite(stats["d_loss"])
    rows = gan.losses()
    assert [r["step"] for r in rows] == [10, 20]   # one row per 10 steps
    assert set(rows[0]) == {"step", "d_loss", "g_loss", "wasserstein"}
    assert len(gan.losses(max_points=2)) == 2


def test_same_seed_gives_identical_losses_and_another_seed_does_not():
    def run(seed):
        gan = LiveGAN(LiveConfig(loss="wgan-gp", seed=seed, batch_size=64))
        gan.step(20)
        return gan.losses()
    assert run(4) == run(4)
    assert run(4) != run(5)


def test_step_budget_stops_training_and_reports_done():
    gan = LiveGAN(LiveConfig(loss="bce", max_steps=50, batch_size=32))
    stats = gan.step(100)
    assert stats["step"] == 50 and stats["done"] is True and "step budget" in stats["reason"]
    again = gan.step(10)
    assert again["step"] == 50 and again["done"] is True
    assert gan.losses()[-1]["step"] == 50


def test_time_budget_counts_training_compute_time():
    gan = LiveGAN(LiveConfig(loss="bce", max_seconds=0.1, batch_size=32))
    stats = gan.step(10_000)
    assert stats["done"] and "time budget" in stats["reason"]
    assert 0.1 <= stats["seconds"] < 2.0 and stats["step"] < 10_000


def test_time_limit_ends_one_call_early_without_ending_training():
    gan = LiveGAN(LiveConfig(loss="bce", batch_size=32))
    stats = gan.step(10_000, time_limit=0.05)
    assert 0 < stats["step"] < 10_000 and not stats["done"]
    assert gan.step(3)["step"] == stats["step"] + 3


def test_divergence_raises_a_user_error_and_the_picture_still_works():
    gan = LiveGAN(LiveConfig(loss="bce", batch_size=32))
    gan.step(5)
    gan.render(120)
    with torch.no_grad():
        gan.G[-1].bias.fill_(float("nan"))      # what an absurd learning rate would do eventually
    with pytest.raises(UserInputError, match="diverged") as info:
        gan.step(10)
    assert "step 6" in str(info.value)
    with pytest.raises(UserInputError, match="diverged"):   # stays stopped until reset
        gan.step(1)
    img = gan.render(120)
    assert img.size == (120, 120) and img.mode == "RGB"
    gan.reset()
    assert gan.step(3)["step"] == 3


def test_modes_covered_counts_mixture_centres():
    gan = LiveGAN(LiveConfig(dataset="ring"))
    assert gan.modes_covered() == (0, 8)                     # untrained: everything near the origin
    gan.G = lambda z: sample_data("ring", len(z), torch.Generator().manual_seed(0))
    assert gan.modes_covered() == (8, 8)
    gan.G = lambda z: torch.tensor(mixture_centres("ring")[0][:3]).repeat(len(z) // 3 + 1, 1)[:len(z)]
    assert gan.modes_covered() == (3, 8)
    centres = torch.tensor(mixture_centres("ring")[0])
    gan.G = lambda z: torch.where(torch.arange(len(z))[:, None] % 100 == 0, centres[1], centres[0])
    assert gan.modes_covered() == (1, 8)                     # 1 % of samples is not enough...
    assert gan.modes_covered(threshold=0.005) == (2, 8)      # ...unless the threshold says so
    assert LiveGAN(LiveConfig(dataset="spiral")).modes_covered() == (0, 0)


# ------------------------------------------------------------------------------------ picture

@pytest.mark.parametrize("arrows", ["motion", "gradient", "none"])
def test_render_is_an_rgb_picture_of_the_requested_size(arrows):
    gan = LiveGAN(LiveConfig(loss="bce", batch_size=64))
    first = gan.render(200, arrows=arrows)
    gan.step(20)
    img = gan.render(200, arrows=arrows)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (200, 200)
    assert first.size == (200, 200)
    arr = np.asarray(img)
    assert arr.std() > 10                                       # not a blank square
    assert (np.abs(arr.astype(int) - (0, 214, 120)).sum(-1) < 30).sum() > 20   # generated points drawn
    assert gan.render(360).size == (360, 360)
    with pytest.raises(UserInputError):
        gan.render(10)
    with pytest.raises(UserInputError):
        gan.render(200, arrows="sideways")


def test_concurrent_step_and_render_do_not_interfere():
    gan = LiveGAN(LiveConfig(loss="bce", batch_size=32))
    errors: list[BaseException] = []

    def train():
        try:
            for _ in range(20):
                gan.step(5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=train)
    t.start()
    for _ in range(10):
        gan.render(100)
    t.join()
    assert not errors and gan.step_count == 100


def test_deepcopy_gives_an_independent_session():
    gan = LiveGAN(LiveConfig(loss="bce", batch_size=32))
    gan.step(5)
    twin = copy.deepcopy(gan)
    twin.step(5)
    assert gan.step_count == 5 and twin.step_count == 10
    assert not torch.equal(gan.G[0].weight, twin.G[0].weight)
    gan.step(5)
    assert gan.losses() == twin.losses()       # same seed and state -> same trajectory
