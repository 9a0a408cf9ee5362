"""The inpainting and ControlNet endpoints through gradio_client against the real launched app, serving tiny
random pipelines (a 4-channel text-to-image one, a 9-channel inpainting one and a ControlNet made from its
U-Net) when the trained ones are absent: valid calls, what stays exact, and bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from playground.core.images import read_params
from playground.data import scenes
from playground.latent.controlnet import DEFAULT_GUIDANCE
from playground.latent.inpaint import METHOD_BLEND, METHOD_NINE

SIDE = 64
COMMON = dict(negative_prompt="", steps=6, guidance_scale=7.5, seed=3)


@pytest.fixture(scope="module")
def client(tiny_sd_app_url: str) -> Client:
    return Client(tiny_sd_app_url, verbose=False)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray]:
    img = scenes.render(scenes.render_dataset(1, seed=5, split="test").specs[0], SIDE)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    img.save(path)
    return str(path), np.asarray(img)


def _stroke(tmp: Path, box: tuple[int, int, int, int], size: int = SIDE, colour=(255, 0, 255, 190)) -> str:
    """An editor layer: transparent, with one opaque-ish rectangle stroke."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), colour), box[:2])
    path = tmp / f"layer_{box}_{size}.png"
    layer.save(path)
    return str(path)


def _editor(background: str, layers: list[str]) -> dict:
    return {"background": handle_file(background), "layers": [handle_file(p) for p in layers],
            "composite": handle_file(background), "id": None}


def _small(path: str) -> np.ndarray:
    """A displayed (nearest-upscaled) picture back at the model's 64 px."""
    img = Image.open(path).convert("RGB")
    return np.asarray(img.resize((SIDE, SIDE), Image.NEAREST)) if img.width != SIDE else np.asarray(img)


# ---- the contract ---------------------------------------------------------------------------------------------
def test_api_lists_the_contract(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = lambda e: [p["parameter_name"] for p in info[e]["parameters"]]  # noqa: E731
    assert names("/inpaint")[:10] == ["editor", "prompt", "negative_prompt", "mask_blur", "padding", "strength",
                                      "steps", "guidance_scale", "seed", "method"]
    assert names("/canny") == ["image", "low", "high"]
    assert names("/controlnet")[:10] == ["image", "prompt", "negative_prompt", "low", "high", "conditioning_scale",
                                         "steps", "guidance_scale", "seed", "scheduler"]
    default = lambda e, name: next(p["parameter_default"] for p in info[e]["parameters"]  # noqa: E731
                                   if p["parameter_name"] == name)
    assert default("/controlnet", "guidance_scale") == DEFAULT_GUIDANCE == 3.0    # the ControlNet's own default
    assert default("/inpaint", "guidance_scale") == 7.5                            # the text-to-image family's


# ---- /inpaint -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [METHOD_NINE, METHOD_BLEND])
def test_inpaint_keeps_every_pixel_outside_the_mask(client, scene, tmp_path, method):
    path, original = scene
    box = (20, 20, 44, 44)
    out = client.predict(_editor(path, [_stroke(tmp_path, box)]), "a large blue square", mask_blur=0, padding=0,
                         strength=1.0, method=method, dilate=0, **COMMON, api_name="/inpaint")
    status, mask, masked, result = out[:4]
    assert status.startswith("**Done**"), status
    res, m = _small(result), _small(mask)[..., 0] > 127
    assert m[box[1]:box[3], box[0]:box[2]].all() and m.sum() == (box[2] - box[0]) * (box[3] - box[1])
    assert np.array_equal(res[~m], original[~m])                          # max difference 0 outside
    params = read_params(Image.open(result))
    assert params["prompt"] == "a large blue square" and params["seed"] == 3


def test_inpaint_same_seed_same_pixels_and_upscaled_editor_input(client, scene, tmp_path):
    """The tab shows 64-px pictures enlarged 4× in the editor: the same picture and stroke at 256 px give the
    same result as at 64 px (the enlargement is undone exactly)."""
    path, original = scene
    big = tmp_path / "big.png"
    Image.fromarray(original).resize((4 * SIDE, 4 * SIDE), Image.NEAREST).save(big)
    box = (8, 30, 30, 56)
    a = client.predict(_editor(path, [_stroke(tmp_path, box)]), "a small red circle", mask_blur=2, padding=0,
                       strength=1.0, method=METHOD_NINE, **COMMON, api_name="/inpaint")
    b = client.predict(_editor(str(big), [_stroke(tmp_path, tuple(4 * v for v in box), 4 * SIDE)]),
                       "a small red circle", mask_blur=2, padding=0, strength=1.0, method=METHOD_NINE, **COMMON,
                       api_name="/inpaint")
    assert np.array_equal(_small(a[3]), _small(b[3]))
    assert "scaled down" in b[0]


def test_inpaint_empty_mask_changes_nothing_and_says_so(client, scene):
    path, original = scene
    status, *_, result = client.predict(_editor(path, []), "a large blue square", mask_blur=2, padding=0,
                                        strength=1.0, method=METHOD_NINE, **COMMON, api_name="/inpaint")[:4]
    assert "nothing" in status.lower()
    assert np.array_equal(_small(result), original)


def test_inpaint_only_masked_mode_runs(client, scene, tmp_path):
    path, original = scene
    box = (36, 36, 52, 52)
    status, mask, _, result = client.predict(_editor(path, [_stroke(tmp_path, box)]), "a small green circle",
                                             mask_blur=1, padding=6, strength=1.0, method=METHOD_NINE, **COMMON,
                                             api_name="/inpaint")[:4]
    assert status.startswith("**Done**")
    m = _small(mask)[..., 0] > 0
    assert np.array_equal(_small(result)[~m], original[~m])


@pytest.mark.parametrize("change, message", [
    (dict(method="magic"), "not in the list of choices"),
    (dict(steps=0), "less than minimum|steps"),
    (dict(guidance_scale=100), "greater than maximum|guidance"),          # NaN: JSON cannot carry it (unit-tested)
    (dict(strength=1.5), "greater than maximum|strength"),
    (dict(mask_blur=-3), "less than minimum|blur"),
    (dict(padding=10_000), "greater than maximum|padding"),
])
def test_inpaint_bad_input_gets_a_clear_message(client, scene, tmp_path, change, message):
    path, _ = scene
    args = dict(prompt="a large blue square", mask_blur=2, padding=0, strength=1.0, method=METHOD_NINE, **COMMON)
    args.update(change)
    with pytest.raises(AppError, match=f"(?i){message}"):
        client.predict(_editor(path, [_stroke(tmp_path, (10, 10, 30, 30))]), api_name="/inpaint", **args)


def test_inpaint_corrupt_upload_gets_a_clear_message(client, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(AppError, match="(?i)image"):
        client.predict(_editor(str(bad), []), "a red circle", mask_blur=2, padding=0, strength=1.0,
                       method=METHOD_NINE, **COMMON, api_name="/inpaint")


# ---- /canny and /controlnet ---------------------------------------------------------------------------------------
def test_canny_preview_outlines_the_objects(client, scene):
    path, original = scene
    edges = _small(client.predict(handle_file(path), 100, 200, api_name="/canny"))[..., 0] > 127
    assert 20 < edges.sum() < 0.5 * edges.size
    # no edge where the picture is flat within 2 px (inside objects, on the background)
    padded = np.pad(original.astype(int), ((2, 2), (2, 2), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5), axis=(0, 1))
    flat = (windows.max(axis=(-2, -1)) == windows.min(axis=(-2, -1))).all(axis=-1)
    assert not edges[flat].any()


def test_canny_reversed_or_bad_thresholds(client, scene):
    path, _ = scene
    a = _small(client.predict(handle_file(path), 200, 100, api_name="/canny"))
    b = _small(client.predict(handle_file(path), 100, 200, api_name="/canny"))
    assert np.array_equal(a, b)                                         # reversed thresholds are swapped
    with pytest.raises(AppError, match="(?i)less than minimum|threshold"):
        client.predict(handle_file(path), -5, 200, api_name="/canny")


def test_controlnet_runs_with_and_without_control(client, scene):
    path, _ = scene
    status, edges, result, without, overlay = client.predict(
        handle_file(path), "a large blue square", low=100, high=200, conditioning_scale=1.0, scheduler="DPM++ 2M",
        **COMMON, api_name="/controlnet")
    assert status.startswith("**Done**")
    for p in (edges, result, without, overlay):
        assert Image.open(p).width >= SIDE
    params = read_params(Image.open(result))
    assert params["prompt"] == "a large blue square" and params["seed"] == 3


def test_controlnet_at_scale_zero_is_the_plain_model(client, scene):
    path, _ = scene
    out = client.predict(handle_file(path), "a large blue square", low=100, high=200, conditioning_scale=0.0,
                         scheduler="DPM++ 2M", **COMMON, api_name="/controlnet")
    assert np.array_equal(_small(out[2]), _small(out[3]))


@pytest.mark.parametrize("change, message", [
    (dict(conditioning_scale=5), "greater than maximum|conditioning"),
    (dict(steps=1000), "greater than maximum|steps"),
    (dict(low=-1), "less than minimum|threshold"),
    (dict(scheduler="warp"), "not in the list of choices|scheduler"),
])
def test_controlnet_bad_input_gets_a_clear_message(client, scene, change, message):
    path, _ = scene
    args = dict(prompt="a red circle", low=100, high=200, conditioning_scale=1.0, scheduler="DPM++ 2M", **COMMON)
    args.update(change)
    with pytest.raises(AppError, match=f"(?i){message}"):
        client.predict(handle_file(path), api_name="/controlnet", **args)


def test_controlnet_other_aspect_ratio_is_cropped_with_a_notice(client, scene, tmp_path):
    path, original = scene
    wide = tmp_path / "wide.png"
    Image.fromarray(np.concatenate([original, original], axis=1)).save(wide)
    status = client.predict(handle_file(str(wide)), "a red circle", low=100, high=200, conditioning_scale=1.0,
                            scheduler="DPM++ 2M", **COMMON, api_name="/controlnet")[0]
    assert "crop" in status.lower()
