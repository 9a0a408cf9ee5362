"""The diffusion sampling endpoints through gradio_client: streamed frames in order, the final
result, bad input, stopping mid-run, and one run at a time per session."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

ARGS = dict(eta=0.0, seed=0, label=3, guidance_scale=3.0, model="unet")


def _step(status: str) -> int:
    return int(re.search(r"step (\d+) /", status).group(1))


def test_denoise_streams_frames_in_order_then_the_digits(client):
    job = client.submit(sampler="ddim", steps=20, n=4, **ARGS, api_name="/denoise")
    outs = list(job)
    frames = [o for o in outs if "step" in (o[2] or "") and "/" in o[2]]
    assert len(frames) >= 2
    steps = [_step(o[2]) for o in frames]
    assert steps == sorted(steps) and steps[-1] == 20
    final = outs[-1]
    assert final[2].startswith("**Done**") and len(final[3]) == 4


def test_denoise_same_seed_same_digits(client):
    a = client.predict(sampler="ddim", steps=10, n=2, **ARGS, api_name="/denoise")[3]
    b = client.predict(sampler="ddim", steps=10, n=2, **ARGS, api_name="/denoise")[3]
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(Image.open(x["image"])), np.asarray(Image.open(y["image"])))


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "less than minimum|steps"),
    ({"steps": 5000}, "greater than maximum|steps"),
    ({"eta": 1.5}, "greater than maximum|eta"),
    ({"guidance_scale": 1e9}, "greater than maximum|guidance"),
    ({"label": 10}, "not in the list of choices|label"),
    ({"n": 500}, "greater than maximum|number"),
    ({"sampler": "ddpm", "n": 40}, "at most 8"),
    ({"model": "sdxl"}, "not in the list of choices|model"),
])
def test_denoise_bad_input(client, kwargs, message):
    args = {"sampler": "ddim", "steps": 10, "n": 2, **ARGS} | kwargs
    with pytest.raises(AppError, match=message):
        client.predict(**args, api_name="/denoise")


def test_compare_runs_ddpm_and_ddim_side_by_side(client):
    job = client.submit(right="ddim", steps=25, n=1, **ARGS, api_name="/denoise_compare")
    outs = list(job)
    frames = [o for o in outs if o[4] and "DDPM** step" in o[4]]
    ddpm_steps = [_step(o[4]) for o in frames]
    assert ddpm_steps == sorted(ddpm_steps) and ddpm_steps[-1] == 1000
    final = outs[-1]
    assert final[4].startswith("**Done**")
    assert "| DDPM | 1000 / 1000 | 1000 |" in final[7] and "| DDIM | 25 / 25 | 25 |" in final[7]
    assert final[5] and final[6]                                     # both trajectory strips


def test_stop_ends_a_run_and_a_session_runs_one_at_a_time(app_url):
    c = Client(app_url, verbose=False)
    job = c.submit(right="ddim", steps=50, n=8, **ARGS, api_name="/denoise_compare")
    deadline = time.time() + 60
    while time.time() < deadline and not any("DDPM** step" in (o[4] or "") for o in job.outputs()):
        time.sleep(0.1)
    with pytest.raises(AppError, match="already going"):
        c.predict(sampler="ddim", steps=10, n=1, **ARGS, api_name="/denoise")
    assert "Stop requested" in c.predict(api_name="/denoise_stop")
    final = None
    for out in job:
        final = out
    assert final[4].startswith("**Stopped**")
    assert c.predict(sampler="ddim", steps=5, n=1, **ARGS, api_name="/denoise")[2].startswith("**Done**")
