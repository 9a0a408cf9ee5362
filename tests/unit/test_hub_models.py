"""Real Stable Diffusion models on the text-to-image family's services, with tiny random-weight pipelines that
have the real architectures' configurations (``latent/tiny_architectures.py``), offline: presets, loading in the
background with progress, fp16 variants, float16 on the CPU, SDXL's VAE upcast, fall-backs said in every
answer, family mismatches, and the ZeroGPU boundary (picklable arguments and frames)."""
from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from playground.latent.tiny_architectures import build_family
from PIL import Image

from playground.core.errors import UserInputError
from playground.core.images import read_params
from playground.core.presets import PRESETS
from playground.core.registry import ModelRegistry
from playground.core.settings import Settings
from playground.latent.components import random_pipeline
from playground.latent.controlnet import ControlNetService
from playground.latent.hub import fetch
from playground.latent.inpaint import METHOD_BLEND, METHOD_NINE, InpaintService
from playground.latent.service import Txt2ImgService


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hub")
    return {f: build_family(root, f) for f in ("sd15", "sd21", "sdxl")}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in stand-ins: a random tiny_sd, so a fall-back to the 64 px model is visible."""
    root = tmp_path_factory.mktemp("ckpt")
    random_pipeline(root / "tiny_sd", preset="test", seed=0)
    return root


def services(settings: Settings) -> tuple[Txt2ImgService, InpaintService, ControlNetService]:
    t = Txt2ImgService(settings, registry=ModelRegistry())
    return t, InpaintService(t, settings), ControlNetService(t, settings)


def family_settings(ckpt: Path, folders: dict[str, Path], **over: str) -> Settings:
    kw = dict(checkpoints_dir=ckpt, txt2img_model=str(folders["txt2img"]), inpaint_model=str(folders["inpaint"]),
              controlnet_model=str(folders["controlnet"]), vae_model=str(folders.get("vae", "")))
    kw.update(over)
    return Settings(**kw)


def scene(size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    img.paste((230, 20, 20), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return img


# ---- settings -------------------------------------------------------------------------------------------------
def test_a_preset_names_a_matching_set_and_each_variable_overrides_it():
    s = Settings.from_env({"PLAYGROUND_PRESET": "sdxl"})
    p = PRESETS["sdxl"]
    assert (s.preset, s.txt2img_model, s.inpaint_model, s.controlnet_model, s.vae_model) == \
        ("sdxl", p.txt2img, p.inpaint, p.controlnet, p.vae)
    s = Settings.from_env({"PLAYGROUND_PRESET": "sd15", "PLAYGROUND_CONTROLNET_MODEL": "me/my-canny"})
    assert s.txt2img_model == PRESETS["sd15"].txt2img and s.controlnet_model == "me/my-canny" and s.vae_model == ""
    assert Settings.from_env({}).txt2img_model == "" and Settings.from_env({}).preset == ""
    with pytest.raises(ValueError, match="PLAYGROUND_PRESET must be one of sd15, sd21, sdxl"):
        Settings.from_env({"PLAYGROUND_PRESET": "sd3"})
    with pytest.raises(ValueError, match="PLAYGROUND_DTYPE"):
        Settings.from_env({"PLAYGROUND_DTYPE": "int8"})
    assert Settings.from_env({"SPACES_ZERO_GPU": "true"}).zero_gpu


def test_fp16_weights_are_taken_where_the_folder_has_them(families, tmp_path):
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(families["sd15"]["txt2img"])
    pipe.to(torch.float16).save_pretrained(tmp_path / "with_fp16", variant="fp16", safe_serialization=True)
    folder, variant = fetch(str(tmp_path / "with_fp16"), torch.float16)
    assert variant == "fp16" and folder == str(tmp_path / "with_fp16")
    assert fetch(str(families["sd15"]["txt2img"]), torch.float16)[1] is None   # no fp16 files: the plain ones
    with pytest.raises(ValueError, match="no safetensors weights"):       # fp16 files only, fp32 asked for
        fetch(str(tmp_path / "with_fp16"), torch.float32)


def test_a_hub_id_is_fetched_file_by_file_with_progress_and_fp16_files_preferred(families, tmp_path, monkeypatch):
    """The Hub path of :func:`fetch`, against a stand-in Hub (the real one is unreachable here) serving a
    repository laid out as SD 1.5's: plain and fp16 weights, .bin copies and a root single-file checkpoint."""
    import shutil

    import huggingface_hub

    repo = tmp_path / "repo"
    shutil.copytree(families["sd15"]["txt2img"], repo)
    for weights in list(repo.rglob("*.safetensors")):
        shutil.copy(weights, weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
        weights.with_suffix(".bin").write_bytes(b"pickle")
    (repo / "v1-5-pruned.ckpt").write_bytes(b"pickle")
    listing = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    cache = tmp_path / "cache" / "snapshot"
    fetched: list[str] = []

    class FakeApi:
        def list_repo_files(self, repo_id: str) -> list[str]:
            assert repo_id == "org/sd15"
            return listing

    def fake_download(repo_id: str, filename: str) -> str:
        fetched.append(filename)
        (cache / filename).parent.mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(repo / filename, cache / filename))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    said: list[str] = []
    folder, variant = fetch("org/sd15", torch.float16, said.append)
    assert folder == str(cache) and variant == "fp16"
    weights = [f for f in fetched if f.endswith(".safetensors")]
    assert weights and all(".fp16." in f for f in weights)                  # the fp16 files, only those
    assert not any(f.endswith((".bin", ".ckpt")) for f in fetched)
    assert fetched[0] == "model_index.json"                                # read first, for the components
    total = len(fetched) - 1                                                # then every chosen file, once
    assert sorted(fetched[1:]) == sorted(set(fetched[1:]))
    assert said[0] == f"downloading 1 of {total} files" and said[-2] == f"downloading {total} of {total} files"
    assert said[-1] == f"reading {len(weights)} weight files into memory"


# ---- loading in the background ----------------------------------------------------------------------------------
def test_models_load_in_the_background_and_the_tab_answers_loading_meanwhile(ckpt, families):
    t, inpaint, cn = services(family_settings(ckpt, families["sd15"]))
    for s in (t, inpaint, cn):
        s.defer_hub_loading()
    gate, seen = threading.Event(), []
    real = t._load_hub

    def slow(model_id: str):                       # a load that waits until the test has looked
        seen.append(model_id)
        gate.wait(30)
        return real(model_id)

    t._load_hub = slow
    loader = threading.Thread(target=t.warmup)
    loader.start()
    for name, call in (("txt2img", lambda: t.generate("a red circle", steps=2)),
                       ("cfg", lambda: t.cfg_step_view("a red circle", steps=2, step_index=0)),
                       ("ready", t.require_ready), ("inpaint", inpaint.require_ready),
                       ("controlnet", cn.require_ready), ("canny", lambda: cn.canny(scene(64)))):
        with pytest.raises(UserInputError, match=r"^Loading `.*txt2img`") as err:
            call()
        assert "the other tabs work meanwhile" in str(err.value), name
    assert t.header_note().startswith("> ⏳ Loading `") and t.pipeline_info() is None
    gate.set()
    loader.join(60)
    assert seen == [str(families["sd15"]["txt2img"])]
    assert t.header_note() == "" and t.loading() == [] and "reading" in t.progress[seen[0]]
    out = t.generate("a red circle", steps=2)
    assert out["model"] == seen[0] and out["images"][0].size == (128, 128)
    with pytest.raises(UserInputError, match=r"^Loading `.*inpaint`"):   # its own model loads in its own warm-up
        inpaint.require_ready()
    with pytest.raises(UserInputError, match=r"^Loading `.*controlnet`"):
        cn.require_ready()
    inpaint.warmup()
    cn.warmup()
    inpaint.require_ready()
    cn.require_ready()
    assert inpaint.header_note() == "" and cn.header_note() == ""


# ---- the one-step CFG view ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
@pytest.mark.parametrize("negative", ["", "blurry"])
def test_the_step_view_is_each_familys_own_pipeline_computation(ckpt, families, family, negative):
    """Written out, the guided loop (with SDXL's pooled embedding and size conditioning, and its
    zeroed empty negative prompt) gives exactly the latents of the family's own pipeline."""
    t, _, _ = services(family_settings(ckpt, families[family]))
    m = t.model()
    with torch.inference_mode():
        manual = t._cfg_loop(m, "a red circle", negative, 4, 5, 6.0, stop_at=None)["latents"]
        ref = m.fresh("DDIM")("a red circle", negative_prompt=negative or None, num_inference_steps=4,
                              guidance_scale=6.0, generator=t._generators(5, 1), output_type="latent").images
    assert torch.allclose(manual, ref, atol=1e-5, rtol=1e-5)


# ---- fall-backs: said in every answer ---------------------------------------------------------------------------
def test_a_model_that_cannot_load_is_named_in_every_answer_and_in_the_png(ckpt, tmp_path):
    missing = str(tmp_path / "no_such_model")
    t, inpaint, _ = services(Settings(checkpoints_dir=ckpt, txt2img_model=missing))
    out = t.generate("a red circle", steps=2)
    assert out["model"] == "tiny_sd" and read_params(out["images"][0])["model"] == "tiny_sd"
    note = t.model_note
    assert missing in note and "`tiny_sd` serves instead" in note and "there is no folder" in note
    answers = {"txt2img": out["notices"], "sweep": t.cfg_sweep("a red circle", steps=2, scales=[1, 2])["notices"],
               "step": t.cfg_step_view("a red circle", steps=2, step_index=0)["notices"],
               "img2img": t.img2img(scene(64), "a red circle", 0.5, 4)["notices"],
               "blend": inpaint.inpaint(scene(64), "a red circle", steps=2, method=METHOD_BLEND,
                                        mask=Image.new("L", (64, 64), 255))["notices"]}
    for name, notices in answers.items():
        assert note in notices, name
    assert t.header_note() == f"> ⚠ {note}"
    assert "this server runs 'tiny_sd'" not in t.read_png_params(out["images"][0])["message"]


def test_not_a_diffusers_pipeline_is_refused_clearly(ckpt, tmp_path):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(b"\0" * 64)
    t, _, _ = services(Settings(checkpoints_dir=ckpt, txt2img_model=str(folder)))
    assert t.generate("a red circle", steps=2)["model"] == "tiny_sd"
    assert "no safetensors weights" in t.model_note and str(folder) in t.model_note


def test_with_only_the_text_to_image_model_the_other_tabs_say_which_builtin_serves(ckpt, families, tmp_path):
    import shutil

    from playground.latent.controlnet import make_controlnet
    from playground.latent.inpaint import make_inpaint_unet
    from playground.latent.inpaint_train import inpaint_pipeline
    from playground.latent.components import build_components, get_config, load_pipeline

    root = tmp_path / "ckpt"
    shutil.copytree(ckpt, root)
    parts = build_components(get_config("test"), seed=1)
    inpaint_pipeline(parts, make_inpaint_unet(parts["unet"])).save_pretrained(root / "tiny_sd_inpaint")
    make_controlnet(load_pipeline(root / "tiny_sd").unet).save_pretrained(root / "tiny_sd_controlnet")
    t, inpaint, cn = services(Settings(checkpoints_dir=root, txt2img_model=str(families["sd15"]["txt2img"])))
    r = inpaint.inpaint(scene(128), "a red circle", steps=2, method=METHOD_NINE, mask=Image.new("L", (128, 128), 255))
    assert r["model"] == "tiny_sd_inpaint" and any("No inpainting model is configured" in n for n in r["notices"])
    r = inpaint.inpaint(scene(128), "a red circle", steps=2, method=METHOD_BLEND, mask=Image.new("L", (128, 128), 255))
    assert r["model"] == str(families["sd15"]["txt2img"]) and r["result"].size == (128, 128)
    r = cn.controlnet(scene(128), "a red circle", steps=2, compare=False)
    assert r["model"] == "tiny_sd + tiny_sd_controlnet"
    assert any("No ControlNet is configured" in n for n in r["notices"])
    assert "No ControlNet is configured" in cn.header_note() and "No inpainting model" in inpaint.header_note()


def test_a_controlnet_of_another_family_is_refused_and_the_tab_says_so(ckpt, families):
    from playground.latent.controlnet import make_controlnet
    from playground.latent.components import load_pipeline

    root = ckpt.parent / "ckpt_cn"
    root.mkdir(exist_ok=True)
    (root / "tiny_sd").exists() or (root / "tiny_sd").symlink_to(ckpt / "tiny_sd")
    if not (root / "tiny_sd_controlnet").exists():
        make_controlnet(load_pipeline(root / "tiny_sd").unet).save_pretrained(root / "tiny_sd_controlnet")
    settings = Settings(checkpoints_dir=root, txt2img_model=str(families["sdxl"]["txt2img"]),
                        controlnet_model=str(families["sd15"]["controlnet"]))
    t, _, cn = services(settings)
    r = cn.controlnet(scene(64), "a red circle", steps=2, compare=False)
    assert r["model"] == "tiny_sd + tiny_sd_controlnet" and r["result"].size == (64, 64)
    said = [n for n in r["notices"] if "is not used" in n]
    assert said and "an SD 1.x/2.x ControlNet" in said[0] and "an SDXL model" in said[0]
    assert cn.model_note in cn.header_note()
    assert t.generate("a red circle", steps=2)["model"] == str(families["sdxl"]["txt2img"])   # the rest serves


def test_a_vae_of_another_latent_space_is_not_swapped_in_and_the_tab_says_so(ckpt, families):
    settings = family_settings(ckpt, families["sd15"], vae_model=str(families["sdxl"]["vae"]))
    t, _, _ = services(settings)
    out = t.generate("a red circle", steps=2)
    assert out["model"] == str(families["sd15"]["txt2img"])                 # the model serves, with its own VAE
    assert t.model().pipe.vae.config.scaling_factor == pytest.approx(0.18215)
    note = [n for n in out["notices"] if "does not fit" in n]
    assert note and "0.13025" in note[0] and "its own VAE serves" in note[0]
    assert note[0] in t.header_note()


# ---- float16 -------------------------------------------------------------------------------------------------------
def test_the_sd15_set_runs_in_float16_on_the_cpu_without_nan(ckpt, families):
    t, inpaint, _ = services(family_settings(ckpt, families["sd15"], dtype="float16"))
    m = t.model()
    assert m.pipe.unet.dtype == torch.float16 and m.pipe.vae.dtype == torch.float16
    last = None
    for item in t.txt2img("a red circle", "", 3, 5.0, 0, "DPM++ 2M", 1, preview_seconds=0.0):
        if item["kind"] == "step":
            assert np.isfinite(np.asarray(item["preview"], dtype=np.float32)).all()
        last = item
    assert last["kind"] == "done"
    arr = np.asarray(last["images"][0], dtype=np.float32)
    assert arr.std() > 1.0                                       # not one flat (black) colour
    r = inpaint.inpaint(scene(128), "a red circle", steps=2, method=METHOD_NINE, mask=Image.new("L", (128, 128), 255))
    assert np.asarray(r["raw"], dtype=np.float32).std() > 1.0


def test_sdxl_vae_with_force_upcast_decodes_in_float32_and_runs_are_serialised(ckpt, families):
    t, _, _ = services(family_settings(ckpt, families["sdxl"], vae_model="", dtype="float16"))
    m = t.model()
    vae = m.pipe.vae
    assert vae.config.force_upcast and vae.dtype == torch.float16 and m.run_lock is not None
    seen: list[torch.dtype] = []
    real = vae.decode

    def spy(z, *a, **k):
        seen.append(next(vae.parameters()).dtype)
        return real(z, *a, **k)

    vae.decode = spy
    try:
        out = m.decode(torch.randn(1, 4, 32, 32, dtype=torch.float16) * 40)   # large latents: fp16 would overflow
    finally:
        vae.decode = real
    assert seen == [torch.float32] and vae.dtype == torch.float16 and torch.isfinite(out).all()
    fixed, _, _ = services(family_settings(ckpt, families["sdxl"], dtype="float16"))
    fm = fixed.model()
    assert not fm.pipe.vae.config.force_upcast and fm.run_lock is None          # the fp16-safe VAE: nothing to do
    assert fixed.cfg_step_view("a red circle", steps=2, step_index=1)["x_t"].size == (256, 256)


# ---- ZeroGPU ---------------------------------------------------------------------------------------------------
def test_off_zerogpu_the_decorator_returns_the_function_and_durations_grow_with_the_work():
    from spaces.config import Config

    from playground.ui.gpu import MAX_SECONDS, check_budget, gpu, seconds

    assert not Config.zero_gpu                       # CI and this machine: not a ZeroGPU Space

    def f(x: int) -> int:
        return x

    assert gpu(lambda x: 1.0)(f) is f
    s = Settings(preset="sd15")
    assert seconds(s, 10, 1) < seconds(s, 20, 1) < seconds(s, 20, 2) <= MAX_SECONDS
    assert seconds(s, 20, 2) < seconds(s, 20, 2, family="sdxl")     # an SDXL model costs more per step
    assert seconds(s, "junk", None) == seconds(s, 1, 1)
    check_budget(s, 100, 8, family="sdxl")           # not on ZeroGPU: nothing to refuse
    with pytest.raises(UserInputError, match="fewer steps or fewer images"):
        check_budget(Settings(preset="sd15", zero_gpu=True), 100, 8, family="sdxl")
    check_budget(Settings(preset="sd15", zero_gpu=True), 25, 4)


ZERO_GPU_SCRIPT = """
import json, sys, threading
from pathlib import Path
import spaces                                   # first, as app.py does: it patches torch's CUDA entry points
from playground.core.registry import ModelRegistry
from playground.core.settings import Settings
from playground.latent.service import Txt2ImgService
from playground.ui.gpu import thread_init
from playground.vae.service import VAEService

settings = Settings(checkpoints_dir=Path(sys.argv[1]), txt2img_model=sys.argv[2], zero_gpu=True)
out = {}
for name, init in (("with_thread_init", thread_init), ("without", lambda: None)):
    t = Txt2ImgService(settings, registry=ModelRegistry())
    t.defer_hub_loading()
    def load():
        init()
        t.warmup()
    th = threading.Thread(target=load)
    th.start()
    th.join()
    m = t.model()
    out[name] = {"note": t.model_note, "builtin": m.builtin, "device": str(m.pipe.unet.device)}
out["vae_device"] = VAEService(settings, registry=ModelRegistry()).device.type
print(json.dumps(out))
"""


def test_under_zerogpu_the_configured_model_loads_to_the_gpu_in_a_background_thread(ckpt, families, tmp_path):
    """``spaces``' CUDA emulation (SPACES_ZERO_GPU set; no GPU here, none needed) is per thread: the app's
    loading threads enter it first (``gpu.thread_init``), and without that the load fails — shown too."""
    import json
    import os
    import subprocess
    import sys

    from playground.core.settings import REPO_ROOT

    env = dict(os.environ, SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL="http://127.0.0.1:9",
               PYTHONPATH=str(REPO_ROOT))
    run = subprocess.run([sys.executable, "-c", ZERO_GPU_SCRIPT, str(ckpt), str(families["sd15"]["txt2img"])],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["with_thread_init"] == {"note": "", "builtin": False, "device": "cuda:0"}
    assert out["without"]["builtin"] and "CUDA" in out["without"]["note"]
    assert out["vae_device"] == "cpu"                # the digit models stay on the CPU


def test_on_zerogpu_even_a_builtin_model_must_be_loaded_before_a_gpu_call(ckpt):
    """A ZeroGPU worker is a fork: whatever it would load itself (with the load lock maybe held by a loading
    thread at fork time) must be in memory first, so until the warm-up has loaded it the tab says so."""
    t = Txt2ImgService(Settings(checkpoints_dir=ckpt, zero_gpu=True), registry=ModelRegistry())
    t.defer_hub_loading()
    with pytest.raises(UserInputError, match="^Loading this tab's models"):
        t.require_ready()
    t.warmup()                                        # on ZeroGPU: loads, runs nothing
    t.require_ready()
    assert f"txt2img/{ckpt / 'tiny_sd'}" in t.registry
    elsewhere = Txt2ImgService(Settings(checkpoints_dir=ckpt), registry=ModelRegistry())
    elsewhere.defer_hub_loading()
    elsewhere.require_ready()                         # the CPU app: a first request just waits for the load


def test_the_digit_models_stay_on_the_cpu_on_zerogpu():
    from playground.vae.service import VAEService

    z = Settings(zero_gpu=True)
    assert VAEService(z, registry=ModelRegistry()).device.type == "cpu"
    assert Txt2ImgService(z, registry=ModelRegistry()).uses_zero_gpu


def test_a_stop_crosses_a_process_boundary_as_a_file():
    from playground.ui.run_guard import RunGuard

    g = RunGuard()
    with g.run():
        flag = pickle.loads(pickle.dumps(g.flag))          # what a ZeroGPU worker receives
        assert not flag()
        g.stop()
        assert flag()
    assert not flag()                                      # cleaned up when the run ends


def test_every_gpu_handler_gets_and_returns_only_picklable_values(ckpt, families, monkeypatch):
    """ZeroGPU pickles a decorated function's arguments into its worker and every result (each frame of a
    generator) back: simulate that boundary around every @spaces.GPU function of the app."""
    import spaces

    calls: list[str] = []

    def fake_gpu(task=None, *, duration=None, size=None):
        def wrap(fn):
            def run(*args, **kwargs):
                assert duration is None or duration(*args, **kwargs) > 0
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                calls.append(fn.__name__)
                out = fn(*args, **kwargs)
                if hasattr(out, "__next__"):
                    return (pickle.loads(pickle.dumps(x)) for x in out)
                return pickle.loads(pickle.dumps(out))
            run.__name__ = fn.__name__
            return run
        return wrap(task) if callable(task) else wrap

    monkeypatch.setattr(spaces, "GPU", fake_gpu)
    import app

    from playground.ui.run_guard import RunGuard

    from playground.core.settings import REPO_ROOT

    demo = app.build_app(family_settings(REPO_ROOT / "checkpoints", families["sd15"]))
    for name, warm in demo.background_warmups:             # the configured models load in the background
        if name in ("txt2img-warm", "inpaint-warm", "controlnet-warm"):
            warm()
    fns = {f.api_name: f.fn for f in demo.fns.values() if f.api_name}
    img = scene(128)
    frames = list(fns["txt2img"]("a red circle", "", 2, 5.0, 0, "DPM++ 2M", 1, RunGuard()))
    assert frames[-1][0].startswith("**Done**")
    fns["cfg_sweep"]("a red circle", "", 2, 0, "DDIM")
    fns["cfg_step"]("a red circle", "", 2, 0, 1, 5.0)
    fns["img2img"](img, "a red circle", 0.5, 4, 5.0, 0, "DDIM")
    editor = {"background": img, "layers": [], "composite": img}
    fns["inpaint"](editor, "a cat", "", 2, 0, 1.0, 2, 5.0, 0, METHOD_NINE, "DDIM", Image.new("L", (128, 128), 255), 0)
    fns["controlnet"](img, "a red circle", "", 100, 200, 1.0, 2, 3.0, 0, "DDIM")
    assert calls == ["txt2img_frames", "cfg_sweep_gpu", "cfg_step_gpu", "img2img_gpu", "inpaint_gpu",
                     "controlnet_gpu"]
