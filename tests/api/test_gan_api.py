"""The digit-GAN endpoints through gradio_client against the launched app: valid and bad calls."""
from __future__ import annotations

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from playground.core.images import read_params


def _img(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def test_gan_api_contract(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = [p["parameter_name"] for p in info["/gan_sample"]["parameters"]]
    assert params[:5] == ["model", "n", "seed", "label", "truncation"]
    for name in ("/gan_compare", "/gan_interpolate", "/gan_live_play", "/gan_live_tick"):
        assert name in info


def test_gan_sample(client):
    a = client.predict(model="cgan", n=4, seed=3, label=5, truncation=1.0, api_name="/gan_sample")
    b = client.predict(model="cgan", n=10, seed=3, label=5, truncation=1.0, api_name="/gan_sample")
    assert len(a) == 4 and len(b) == 10
    for x, y in zip(a, b[:4]):
        assert np.array_equal(_img(x["image"]), _img(y["image"]))
    params = read_params(Image.open(a[0]["image"]))
    assert params["model"] == "cgan" and params["label"] == 5
    clipped = client.predict(model="wgan-gp", n=2, seed=3, label=-1, truncation=0.5, mode="clip",
                             api_name="/gan_sample")
    assert len(clipped) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "stylegan"}, "not in the list of choices|model"),
    ({"label": 4}, "unconditional"),
    ({"model": "cgan", "label": 12}, "not in the list of choices|label"),
    ({"n": 500}, "greater than maximum|number of samples"),
    ({"truncation": 0}, "less than minimum|truncation"),
])
def test_gan_sample_bad_input(client, kwargs, message):
    args = {"model": "gan", "n": 4, "seed": 0, "label": -1, "truncation": 1.0} | kwargs
    with pytest.raises(AppError, match=message):
        client.predict(**args, api_name="/gan_sample")


def test_gan_compare(client):
    gallery, hist = client.predict(n=9, seed=2, truncation=1.0, api_name="/gan_compare")
    assert len(gallery) == 5
    assert "P(real)" in gallery[0]["caption"] and "critic" in gallery[3]["caption"]
    cols = hist["columns"]
    counts: dict[str, int] = {}
    for row in hist["data"]:
        r = dict(zip(cols, row))
        counts[r["model"]] = counts.get(r["model"], 0) + r["count"]
    assert sorted(counts.values()) == [9] * 5
    with pytest.raises(AppError, match="greater than maximum|number"):
        client.predict(n=1000, seed=2, truncation=1.0, api_name="/gan_compare")


def test_gan_interpolate(client):
    strip, gif = client.predict(model="wgan", seed_a=1, seed_b=2, steps=5, label=-1, method="linear",
                                api_name="/gan_interpolate")
    assert len(strip) == 5
    anim = Image.open(gif)
    assert anim.format == "GIF" and anim.n_frames == 8            # there (5) and back (3)
    with pytest.raises(AppError, match="unconditional"):
        client.predict(model="wgan", seed_a=1, seed_b=2, steps=5, label=3, method="linear",
                       api_name="/gan_interpolate")
