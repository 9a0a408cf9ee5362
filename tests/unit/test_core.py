"""Ground floor: settings, registry, seeding, validation, images, sketches."""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from playground.core import validation as V
from playground.core.errors import UserInputError
from playground.core.images import make_grid, read_params, to_pil, with_params
from playground.core.registry import ModelRegistry
from playground.core.seeding import make_generator, randn
from playground.core.settings import Limits, Settings
from playground.core.sketch import to_mnist_digit


def test_settings_from_env():
    s = Settings.from_env({"PLAYGROUND_DEVICE": "cpu", "PLAYGROUND_PORT": "9999", "PLAYGROUND_TXT2IMG_MODEL": "x/y"})
    assert s.device == "cpu" and s.port == 9999 and s.txt2img_model == "x/y"
    with pytest.raises(ValueError):
        Settings.from_env({"PLAYGROUND_DEVICE": "tpu"})


def test_registry_loads_once_under_concurrency():
    reg = ModelRegistry()
    calls = []

    def loader():
        calls.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(reg.get("m", loader))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and reg.load_counts["m"] == 1
    assert all(r is results[0] for r in results)


def test_seeding_is_per_request_and_batch_size_independent():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = randn((4, 3), seed=7)
    b = randn((64, 3), seed=7)
    assert torch.equal(a, b[:4])
    assert torch.equal(torch.get_rng_state(), before), "the global RNG must not be touched"
    assert not torch.equal(randn((4, 3), seed=8), a)
    assert torch.equal(torch.randn(3, generator=make_generator(5)), torch.randn(3, generator=make_generator(5)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "abc", None, True, [1]])
def test_check_float_refuses_non_numbers(bad):
    with pytest.raises(UserInputError):
        V.check_float(bad, "x", -1, 1)


def test_check_int_and_ranges():
    assert V.check_int(3.0, "n", 1, 5) == 3
    with pytest.raises(UserInputError, match="whole number"):
        V.check_int(2.5, "n", 1, 5)
    with pytest.raises(UserInputError, match="between 1 and 5"):
        V.check_int(6, "n", 1, 5)


def test_check_vector():
    assert V.check_vector("[0.5, -1]", "z", 2, 4).tolist() == [0.5, -1.0]
    with pytest.raises(UserInputError, match="exactly 3"):
        V.check_vector([1, 2], "z", 3, 4)
    with pytest.raises(UserInputError, match="finite"):
        V.check_vector([1, float("nan")], "z", 2, 4)
    with pytest.raises(UserInputError, match="outside"):
        V.check_vector([1, 100], "z", 2, 4)


def test_check_image_refuses_corrupt_and_huge():
    lim = Limits()
    with pytest.raises(UserInputError, match="not an image"):
        V.check_image(b"definitely not a png", lim)
    buf = io.BytesIO()
    Image.new("L", (10, 10)).save(buf, "PNG")
    with pytest.raises(UserInputError, match="not an image"):
        V.check_image(buf.getvalue()[:30], lim)  # truncated
    with pytest.raises(UserInputError, match="limit"):
        V.check_image(np.zeros((5000, 10), dtype=np.uint8), lim)
    with pytest.raises(UserInputError, match="provide"):
        V.check_image(None, lim)
    assert V.check_image(buf.getvalue(), lim).size == (10, 10)


def test_png_params_round_trip_and_unique_files():
    img = to_pil(torch.rand(1, 8, 8))
    a, b = with_params(img, {"seed": 1}), with_params(img, {"seed": 1})
    files = []
    for im in (a, b):
        buf = io.BytesIO()
        from playground.core.images import png_info

        im.save(buf, "PNG", pnginfo=png_info(im))
        files.append(buf.getvalue())
    assert files[0] != files[1], "identical pictures must still be distinct files"
    back = Image.open(io.BytesIO(files[0]))
    assert read_params(back)["seed"] == 1
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_make_grid_layout():
    g = make_grid(torch.zeros(5, 1, 4, 4), nrow=3, pad=1)
    assert g.shape == (1, 2 * 5 + 1, 3 * 5 + 1)


def test_sketch_to_mnist_digit():
    canvas = Image.new("RGB", (280, 280), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).line([(140, 40), (140, 240)], fill="black", width=20)
    d = to_mnist_digit(canvas)
    assert d.shape == (28, 28) and d.max() > 0.9 and d[0].max() == 0  # white ink on black, centred
    cols = np.where(d.max(0) > 0.5)[0]
    assert 11 <= cols.mean() <= 16
    with pytest.raises(UserInputError, match="blank"):
        to_mnist_digit(Image.new("RGB", (100, 100), "white"))
    with pytest.raises(UserInputError, match="blank"):
        to_mnist_digit(Image.new("RGBA", (100, 100), (0, 0, 0, 0)))
