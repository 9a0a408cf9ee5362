"""The live 2-D GAN trainer through gradio_client: each client is its own browser session."""
from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

SETTINGS = dict(dataset="ring", loss="wgan-gp", lr_g=1e-3, lr_d=3e-3, d_steps=3, seed=0, arrows="motion")


def _step_of(stats: str) -> int:
    return int(stats.split("step ")[1].split("*")[0])


def test_reset_step_play_tick_pause(app_url):
    c = Client(app_url, verbose=False)
    stats = c.predict(**SETTINGS, api_name="/gan_live_reset")[1]
    assert _step_of(stats) == 0
    stats = c.predict(n=30, arrows="gradient", api_name="/gan_live_step")[1]
    assert _step_of(stats) == 30
    c.predict(**SETTINGS, api_name="/gan_live_play")
    time.sleep(1.5)
    stats = c.predict(arrows="motion", api_name="/gan_live_tick")[1]
    assert _step_of(stats) > 30, stats
    paused = c.predict(arrows="motion", api_name="/gan_live_pause")[1]
    time.sleep(0.5)
    later = c.predict(arrows="motion", api_name="/gan_live_tick")[1]
    assert _step_of(later) == _step_of(paused), "pause must stop training"


def test_sessions_are_independent(app_url):
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    a.predict(**SETTINGS, api_name="/gan_live_reset")
    b.predict(**(SETTINGS | {"loss": "bce", "lr_d": 1e-3, "d_steps": 1}), api_name="/gan_live_reset")
    sa = a.predict(n=40, arrows="none", api_name="/gan_live_step")[1]
    sb = b.predict(n=10, arrows="none", api_name="/gan_live_step")[1]
    assert _step_of(sa) == 40 and _step_of(sb) == 10
    assert "Wasserstein" in sa and "Wasserstein" not in sb


def test_bad_live_input(app_url):
    c = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="Reset or Play first"):
        c.predict(n=10, arrows="motion", api_name="/gan_live_step")
    with pytest.raises(AppError, match="at least 2 points"):
        c.predict(**(SETTINGS | {"dataset": "custom"}), api_name="/gan_live_reset")
    with pytest.raises(AppError, match="learning rate"):
        c.predict(**(SETTINGS | {"lr_g": 1e9}), api_name="/gan_live_reset")
    with pytest.raises(AppError, match="learning rate"):
        c.predict(**(SETTINGS | {"lr_d": -1}), api_name="/gan_live_reset")
