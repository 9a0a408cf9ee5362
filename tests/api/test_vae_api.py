"""Every VAE endpoint through gradio_client against the launched app: a valid call and a bad one."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from playground.core.images import read_params


def _img(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def test_api_lists_the_contract(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/vae_decode", "/vae_sample", "/vae_interpolate", "/vae_encode"):
        assert name in info
    assert [p["parameter_name"] for p in info["/vae_sample"]["parameters"]] == ["n", "seed", "model"]
    assert [p["parameter_name"] for p in info["/vae_decode"]["parameters"]] == ["z", "model"]


def test_vae_decode(client):
    path = client.predict(z=[0.0] * 20, model="vae20", api_name="/vae_decode")
    img = Image.open(path)
    assert img.size == (224, 224)
    assert read_params(img)["model"] == "vae20"
    with pytest.raises(AppError, match="exactly 20"):
        client.predict(z=[0.0] * 3, model="vae20", api_name="/vae_decode")
    with pytest.raises(AppError, match="finite"):
        client.predict(z="[NaN" + ", 0" * 19 + "]", model="vae20", api_name="/vae_decode")


def test_vae_sample(client):
    a = client.predict(n=4, seed=11, model="vae20", api_name="/vae_sample")
    b = client.predict(n=8, seed=11, model="vae20", api_name="/vae_sample")
    assert len(a) == 4 and len(b) == 8
    for x, y in zip(a, b[:4]):
        assert np.array_equal(_img(x["image"]), _img(y["image"]))
    with pytest.raises(AppError, match="between 1 and|greater than maximum"):
        client.predict(n=100_000, seed=1, model="vae20", api_name="/vae_sample")
    with pytest.raises(AppError, match="Unknown model|not in the list of choices"):
        client.predict(n=4, seed=1, model="nope", api_name="/vae_sample")


def test_vae_interpolate(client):
    frames = client.predict(digit_a=3, digit_b=950, steps=7, method="slerp", model="vae20",
                            api_name="/vae_interpolate")
    assert len(frames) == 7
    with pytest.raises(AppError, match="test digit index|greater than maximum"):
        client.predict(digit_a=3, digit_b=99_999, steps=7, method="linear", model="vae20",
                       api_name="/vae_interpolate")


def test_vae_encode(client, tmp_path):
    p = tmp_path / "seven.png"
    img = Image.new("RGB", (200, 200), "white")
    ImageDraw.Draw(img).line([(40, 40), (160, 40), (90, 180)], fill="black", width=16)
    img.save(p)
    z, recon, seen, elbo, where = client.predict(image=handle_file(str(p)), model="vae20", api_name="/vae_encode")
    assert len(z) == 20 and "ELBO" in elbo
    assert Image.open(recon).size == (224, 224)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    with pytest.raises(AppError, match="blank"):
        client.predict(image=handle_file(str(blank)), model="vae20", api_name="/vae_encode")
    notimg = tmp_path / "notes.png"
    notimg.write_bytes(b"this is not an image at all")
    with pytest.raises(AppError):
        client.predict(image=handle_file(str(notimg)), model="vae20", api_name="/vae_encode")


def test_app_keeps_serving_after_errors(client):
    for _ in range(3):
        with pytest.raises(AppError):
            client.predict(z="[" + ", ".join(["inf"] * 20) + "]", model="vae20", api_name="/vae_decode")
    assert Image.open(client.predict(z=[0.5] * 20, model="vae20", api_name="/vae_decode")).size == (224, 224)


def test_identical_concurrent_requests_arrive_complete(app_url):
    """Design §6: identical outputs requested at once must each arrive whole (and equal)."""
    clients = [Client(app_url, verbose=False) for _ in range(8)]

    def call(c: Client) -> np.ndarray:
        return np.stack([_img(c.predict(n=4, seed=5, model="vae20", api_name="/vae_sample")[i]["image"])
                         for i in range(4)])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, clients * 3))
    assert all(np.array_equal(r, results[0]) for r in results)


def test_vae_compare_prior(client):
    ae, vae = client.predict(n=9, seed=2, api_name="/vae_compare_prior")
    assert Image.open(ae).size == Image.open(vae).size
    with pytest.raises(AppError, match="seed|minimum|less than"):
        client.predict(n=9, seed=-3, api_name="/vae_compare_prior")


def test_vae_scenes(client):
    orig, rec, smp = client.predict(seed=4, api_name="/vae_scenes")
    assert Image.open(orig).size == Image.open(rec).size
    assert Image.open(smp).mode == "RGB"
    with pytest.raises(AppError, match="seed|minimum|less than"):
        client.predict(seed=-1, api_name="/vae_scenes")
