"""The diffusion tab's forward-process explorer through gradio_client (needs no trained denoiser)."""
from __future__ import annotations

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image


def _gray(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255


def test_forward_process_from_clean_to_noise(client):
    clean_lin, clean_cos, text = client.predict(digit=3, t=0, seed=0, api_name="/forward_process")
    noisy_lin, noisy_cos, _ = client.predict(digit=3, t=999, seed=0, api_name="/forward_process")
    assert "t = 0" in text and "linear" in text and "cosine" in text
    clean, noisy = _gray(clean_lin), _gray(noisy_lin)
    assert clean.shape == noisy.shape == (168, 168)
    assert np.mean(np.abs(clean - _gray(clean_cos))) < 0.02          # t = 0: both schedules keep the digit
    assert np.mean(np.abs(clean - noisy)) > 0.2                      # t = 999: the digit is gone
    again = client.predict(digit=3, t=999, seed=0, api_name="/forward_process")[0]
    assert np.array_equal(_gray(again), noisy)                        # same seed, same noise


def test_cosine_keeps_more_signal_midway(client):
    text = client.predict(digit=10, t=500, seed=0, api_name="/forward_process")[2]
    lin = float(text.split("linear: ᾱ = ")[1].split(",")[0])
    cos = float(text.split("cosine: ᾱ = ")[1].split(",")[0])
    assert 0 < lin < cos < 1


def test_schedule_plot_marks_t(client):
    ab, snr = client.predict(t=250, api_name="/schedule_plot")
    rows = [dict(zip(ab["columns"], r)) for r in ab["data"]]
    assert any(r["series"] == "t" and r["t"] == 250 for r in rows)
    assert {r["series"] for r in rows} >= {"linear", "cosine", "t"}
    assert any(r["series"] == "t" for r in (dict(zip(snr["columns"], x)) for x in snr["data"]))


@pytest.mark.parametrize("kwargs, message", [
    ({"digit": 5000}, "greater than maximum|digit"),
    ({"t": -1}, "less than minimum|t"),
    ({"t": 1000}, "greater than maximum|t"),
])
def test_forward_process_bad_input(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(**({"digit": 1, "t": 10, "seed": 0} | kwargs), api_name="/forward_process")
