"""The Space's promises (README header) against what is installed, the upload's file list, the preload list."""
from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub.utils import filter_repo_objects
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from playground.core.hub_files import pipeline_components, preload_line, select_files
from playground.core.presets import PRESETS
from playground.deploy import IGNORE_PATTERNS, MAX_FILE_BYTES, preload_files, space_header, split_header, upload_files

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def header() -> dict:
    meta, _ = split_header(README)
    assert meta, "README.md has no YAML header"
    return meta


def pins() -> dict[str, str]:
    """Every ``name==version`` line of requirements.txt and requirements-dev.txt."""
    out = {}
    for req in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / req).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = (s.strip() for s in line.split("==", 1))
                out[name] = version
    return out


# --- (a, b) the header against the pins and the installed distributions -------------------------------------

def test_header_is_valid_yaml_for_the_hub_parsers():
    from huggingface_hub import RepoCard

    meta = yaml.safe_load(README.split("---\n", 2)[1])
    assert meta == header()
    assert RepoCard(README).data.to_dict()["sdk_version"] == meta["sdk_version"]


def test_python_version_is_set_to_311():
    version = header().get("python_version")
    assert isinstance(version, str), "python_version must be a quoted string (3.10 would parse as 3.1)"
    assert version == "3.11"


def test_every_pin_is_installed_and_supports_the_headers_python():
    python = header()["python_version"]
    found = pins()
    assert {"gradio", "spaces", "huggingface_hub", "torch", "diffusers", "pytest"} <= set(found)
    bad = []
    for name, version in found.items():
        meta = md.metadata(name)
        assert Version(meta["Version"]) == Version(version), f"{name}: pinned {version}, installed {meta['Version']}"
        requires = meta.get("Requires-Python")
        if requires and not SpecifierSet(requires).contains(python, prereleases=True):
            bad.append(f"{name}=={version}: Requires-Python {requires}")
    assert not bad, f"pins that do not install on Python {python}: {bad}"


def test_sdk_is_the_pinned_gradio_and_the_app_file_exists():
    meta = header()
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == pins()["gradio"]
    assert (ROOT / meta["app_file"]).is_file()


def test_models_lists_every_preset_model():
    wanted = {m for p in PRESETS.values() for m in p.models()}
    assert len(wanted) >= 10
    assert set(header()["models"]) == wanted


# --- (c) the upload's file list ------------------------------------------------------------------------------

def _rel(files: list[Path], root: Path) -> list[str]:
    return [f.relative_to(root.resolve()).as_posix() for f in files]


def test_upload_of_this_checkout_holds_the_app_and_no_local_files():
    names = _rel(upload_files(ROOT), ROOT)
    assert {"app.py", "requirements.txt", "README.md"} <= set(names)
    assert sum(n.startswith("checkpoints/") and n.endswith(".safetensors") for n in names) >= 10
    for n in names:
        parts = n.split("/")
        assert parts[0] not in ("runs", ".venv", "venv", ".git", ".ci", ".pytest_cache", ".gradio"), n
        assert "__pycache__" not in parts and not n.endswith(".pyc"), n
        assert (ROOT / n).stat().st_size <= MAX_FILE_BYTES, n


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _write(root: Path, name: str, size: int = 10) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


LOCAL = ["runs/tiny_sd/last.pt", ".venv/lib/site.py", "venv/bin/python", "pkg/__pycache__/m.cpython-311.pyc",
         ".pytest_cache/v/x", ".gradio/flagged/a.png", "test-results/r.json", "bench_latent.json", ".ci/run",
         ".env", "sub/.venv/x.py"]


def test_upload_files_leaves_out_local_and_untracked_files(tmp_path: Path):
    for name in ["app.py", "README.md", "pkg/mod.py", "checkpoints/m/model.safetensors", "untracked.txt", *LOCAL]:
        _write(tmp_path, name)
    _write(tmp_path, "runs/big/last.pt", MAX_FILE_BYTES + 1)          # big, but never uploaded
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-f", "app.py", "README.md", "pkg", "checkpoints", *LOCAL, "runs")
    names = _rel(upload_files(tmp_path), tmp_path)
    assert names == ["README.md", "app.py", "checkpoints/m/model.safetensors", "pkg/mod.py"]


def test_upload_files_without_git_uses_the_patterns_alone(tmp_path: Path):
    for name in ["app.py", "notes.txt", *LOCAL]:
        _write(tmp_path, name)
    assert _rel(upload_files(tmp_path), tmp_path) == ["app.py", "notes.txt"]


def test_upload_files_refuses_a_tracked_file_over_10_mb(tmp_path: Path):
    _write(tmp_path, "app.py")
    _write(tmp_path, "checkpoints/huge/model.safetensors", MAX_FILE_BYTES + 1)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    with pytest.raises(ValueError, match="checkpoints/huge/model.safetensors"):
        upload_files(tmp_path)
    _write(tmp_path, "checkpoints/huge/model.safetensors", MAX_FILE_BYTES)   # exactly 10 MB is allowed
    assert len(upload_files(tmp_path)) == 2


def test_ignore_patterns_cover_the_gitignore():
    for entry in (ROOT / ".gitignore").read_text().split():
        probe = entry.lstrip("/").replace("*", "x").rstrip("/") + ("/f" if entry.endswith("/") else "")
        assert not list(filter_repo_objects([probe], ignore_patterns=IGNORE_PATTERNS)), entry


# --- (d, e) the header a deploy writes ------------------------------------------------------------------------

FAKE_PRELOAD = {"stabilityai/stable-diffusion-xl-base-1.0": ["model_index.json", "unet/config.json",
                                                             "unet/diffusion_pytorch_model.fp16.safetensors"],
                "madebyollin/sdxl-vae-fp16-fix": ["config.json", "diffusion_pytorch_model.safetensors"]}


def test_space_header_for_a_gpu_preset():
    text = space_header(README, "sdxl", preload=FAKE_PRELOAD)
    meta, body = split_header(text)
    assert meta == yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["suggested_hardware"] == "zero-a10g"
    assert meta["preload_from_hub"] == [
        "stabilityai/stable-diffusion-xl-base-1.0 model_index.json,unet/config.json,"
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "madebyollin/sdxl-vae-fp16-fix config.json,diffusion_pytorch_model.safetensors"]
    old = header()
    assert {k: v for k, v in meta.items() if k not in ("suggested_hardware", "preload_from_hub")} == \
        {k: v for k, v in old.items() if k != "suggested_hardware"}
    assert body == split_header(README)[1]
    assert split_header(space_header(README, "sdxl", "a10g-small", FAKE_PRELOAD))[0]["suggested_hardware"] == \
        "a10g-small"


def test_space_header_for_cpu_drops_any_preload():
    meta, _ = split_header(space_header(space_header(README, "sd15", preload=FAKE_PRELOAD)))
    assert meta["suggested_hardware"] == "cpu-basic"
    assert "preload_from_hub" not in meta
    assert meta["python_version"] == "3.11" and meta["sdk_version"] == header()["sdk_version"]
    with pytest.raises(ValueError):
        space_header(README, "sd99")


def test_space_header_parses_with_huggingface_hub(tmp_path: Path):
    from huggingface_hub import metadata_load

    path = tmp_path / "README.md"
    path.write_text(space_header(README, "sdxl", preload=FAKE_PRELOAD), encoding="utf-8")
    meta = metadata_load(path)
    assert meta is not None and len(meta["preload_from_hub"]) == 2 and meta["python_version"] == "3.11"


# --- (f) which files of a Hub repository from_pretrained reads -------------------------------------------------

SD15_INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
              "feature_extractor": ["transformers", "CLIPImageProcessor"],
              "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
              "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
              "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
              "vae": ["diffusers", "AutoencoderKL"]}
SD15 = """.gitattributes README.md model_index.json v1-5-pruned-emaonly.ckpt v1-5-pruned-emaonly.safetensors
v1-5-pruned.ckpt v1-5-pruned.safetensors feature_extractor/preprocessor_config.json
safety_checker/config.json safety_checker/model.fp16.safetensors safety_checker/model.safetensors
safety_checker/pytorch_model.bin safety_checker/pytorch_model.fp16.bin safety_checker/flax_model.msgpack
scheduler/scheduler_config.json text_encoder/config.json text_encoder/model.fp16.safetensors
text_encoder/model.safetensors text_encoder/pytorch_model.bin text_encoder/pytorch_model.fp16.bin
text_encoder/flax_model.msgpack tokenizer/merges.txt tokenizer/special_tokens_map.json
tokenizer/tokenizer_config.json tokenizer/vocab.json unet/config.json unet/diffusion_pytorch_model.bin
unet/diffusion_pytorch_model.fp16.bin unet/diffusion_pytorch_model.fp16.safetensors
unet/diffusion_pytorch_model.non_ema.bin unet/diffusion_pytorch_model.non_ema.safetensors
unet/diffusion_pytorch_model.safetensors unet/diffusion_flax_model.msgpack vae/config.json
vae/diffusion_pytorch_model.bin vae/diffusion_pytorch_model.fp16.bin vae/diffusion_pytorch_model.fp16.safetensors
vae/diffusion_pytorch_model.safetensors vae/diffusion_flax_model.msgpack""".split()
SD15_CONFIGS = ["feature_extractor/preprocessor_config.json", "model_index.json", "safety_checker/config.json",
                "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt",
                "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
                "unet/config.json", "vae/config.json"]

# SDXL-like: a sharded fp16 U-Net (with plain shards too), a legacy-sharded fp16 text encoder, a VAE without fp16.
SDXL_INDEX = {"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
              "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
              "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
              "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
              "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
              "image_encoder": [None, None], "feature_extractor": [None, None]}
SDXL = """01.png LICENSE.md README.md model_index.json sd_xl_base_1.0.safetensors sd_xl_base_1.0_0.9vae.safetensors
sd_xl_offset_example-lora_1.0.safetensors scheduler/scheduler_config.json text_encoder/config.json
text_encoder/model.fp16.safetensors text_encoder/model.safetensors text_encoder/model.onnx
text_encoder/openvino_model.bin text_encoder/openvino_model.xml text_encoder/flax_model.msgpack
text_encoder_2/config.json text_encoder_2/model-00001-of-00002.fp16.safetensors
text_encoder_2/model-00002-of-00002.fp16.safetensors text_encoder_2/model.safetensors.fp16.index.json
text_encoder_2/model.safetensors text_encoder_2/model.onnx text_encoder_2/model.onnx_data
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
tokenizer_2/merges.txt tokenizer_2/special_tokens_map.json tokenizer_2/tokenizer_config.json tokenizer_2/vocab.json
unet/config.json unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors
unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors unet/diffusion_pytorch_model.safetensors.index.fp16.json
unet/diffusion_pytorch_model-00001-of-00003.safetensors unet/diffusion_pytorch_model-00002-of-00003.safetensors
unet/diffusion_pytorch_model-00003-of-00003.safetensors unet/diffusion_pytorch_model.safetensors.index.json
unet/diffusion_pytorch_model.bin.index.json unet/model.onnx unet/model.onnx_data unet/openvino_model.bin
unet/diffusion_flax_model.msgpack vae/config.json vae/diffusion_pytorch_model.safetensors
vae/diffusion_pytorch_model.ema.safetensors vae/diffusion_flax_model.msgpack vae_decoder/config.json
vae_decoder/model.onnx vae_encoder/config.json vae_encoder/model.onnx""".split()

CANNY = ["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors", ".gitattributes"]
VAE_FIX = ["README.md", "config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors",
           "sdxl.vae.safetensors", "sdxl_vae.safetensors", "images/sdxl-vae-fp16-fix-demo.png"]


def test_pipeline_components_from_model_index():
    assert pipeline_components(SD15_INDEX) == ["feature_extractor", "safety_checker", "scheduler", "text_encoder",
                                               "tokenizer", "unet", "vae"]
    assert "image_encoder" not in pipeline_components(SDXL_INDEX)
    assert "force_zeros_for_empty_prompt" not in pipeline_components(SDXL_INDEX)


def test_select_sd15_fp16():
    got = select_files(SD15, pipeline_components(SD15_INDEX))
    assert got == sorted(SD15_CONFIGS + ["safety_checker/model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
                                         "unet/diffusion_pytorch_model.fp16.safetensors",
                                         "vae/diffusion_pytorch_model.fp16.safetensors"])


def test_select_sd15_without_variant_takes_the_plain_weights():
    got = select_files(SD15, pipeline_components(SD15_INDEX), variant=None)
    assert got == sorted(SD15_CONFIGS + ["safety_checker/model.safetensors", "text_encoder/model.safetensors",
                                         "unet/diffusion_pytorch_model.safetensors",
                                         "vae/diffusion_pytorch_model.safetensors"])
    assert got == select_files(SD15, pipeline_components(SD15_INDEX), variant="bf16")   # no bf16 anywhere


def test_select_sdxl_fp16_shards_and_per_folder_fallback():
    got = select_files(SDXL, pipeline_components(SDXL_INDEX))
    weights = [f for f in got if not f.endswith((".txt", ".json")) or ".index." in f]
    assert weights == ["text_encoder/model.fp16.safetensors",
                       "text_encoder_2/model-00001-of-00002.fp16.safetensors",
                       "text_encoder_2/model-00002-of-00002.fp16.safetensors",
                       "text_encoder_2/model.safetensors.fp16.index.json",
                       "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                       "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
                       "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
                       "vae/diffusion_pytorch_model.safetensors"]
    assert "tokenizer_2/vocab.json" in got and "scheduler/scheduler_config.json" in got and "model_index.json" in got
    plain = select_files(SDXL, pipeline_components(SDXL_INDEX), variant=None)
    assert "unet/diffusion_pytorch_model.safetensors.index.json" in plain
    assert "unet/diffusion_pytorch_model-00003-of-00003.safetensors" in plain
    assert not any(".fp16" in f or ".ema." in f for f in plain)


@pytest.mark.parametrize("listing, index", [(SD15, SD15_INDEX), (SDXL, SDXL_INDEX)])
def test_select_never_takes_pickles_other_formats_or_root_checkpoints(listing: list[str], index: dict):
    for variant in ("fp16", None):
        got = select_files(listing, pipeline_components(index), variant)
        for f in got:
            assert not f.endswith((".bin", ".ckpt", ".onnx", ".onnx_data", ".msgpack", ".h5", ".pb", ".png", ".xml",
                                   ".md")), f
            assert "/" in f or f == "model_index.json", f
            assert f.split("/")[0] in pipeline_components(index) or f == "model_index.json", f


@pytest.mark.parametrize("listing, index", [(SD15, SD15_INDEX), (SDXL, SDXL_INDEX)])
@pytest.mark.parametrize("variant", ["fp16", None])
def test_select_agrees_with_diffusers_on_the_weights(listing: list[str], index: dict, variant: str | None):
    from diffusers.pipelines.pipeline_loading_utils import variant_compatible_siblings

    theirs, _ = variant_compatible_siblings(listing, variant=variant, ignore_patterns=["*.bin", "*.msgpack", "*.onnx",
                                                                                       "*.pb"])
    components = pipeline_components(index)
    theirs = {f for f in theirs if f.endswith(".safetensors") and f.split("/")[0] in components}
    assert {f for f in select_files(listing, components, variant) if f.endswith(".safetensors")} == theirs


def test_select_single_model_repos():
    assert select_files(CANNY) == ["config.json", "diffusion_pytorch_model.safetensors"]     # no fp16: plain
    assert select_files(CANNY, variant=None) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert select_files(VAE_FIX) == ["config.json", "diffusion_pytorch_model.safetensors"]   # not sdxl_vae.*
    sdxl_canny = CANNY + ["diffusion_pytorch_model.fp16.safetensors", "images/tile.png", "README.md"]
    assert select_files(sdxl_canny) == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    assert select_files(["sub/config.json", "sub/diffusion_pytorch_model.safetensors"]) == []


def test_preload_line():
    assert preload_line("lllyasviel/sd-controlnet-canny", select_files(CANNY)) == \
        "lllyasviel/sd-controlnet-canny config.json,diffusion_pytorch_model.safetensors"
    with pytest.raises(ValueError):
        preload_line("some/repo", [])          # the bare id would preload the whole repository
    with pytest.raises(ValueError):
        preload_line("some/repo", ["a b.json"])


class FakeApi:
    """``list_repo_files`` / ``hf_hub_download`` over the listings above, offline."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repos = {"a/sd15": (SD15, SD15_INDEX), "a/canny": (CANNY, None)}

    def list_repo_files(self, repo_id: str) -> list[str]:
        return self.repos[repo_id][0]

    def hf_hub_download(self, repo_id: str, filename: str) -> str:
        assert filename == "model_index.json"
        path = self.tmp / repo_id.replace("/", "--") / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.repos[repo_id][1]))
        return str(path)


def test_preload_files_lists_each_repo_with_its_components(tmp_path: Path):
    got = preload_files(["a/sd15", "a/canny"], FakeApi(tmp_path))
    assert got == {"a/sd15": select_files(SD15, pipeline_components(SD15_INDEX)),
                   "a/canny": ["config.json", "diffusion_pytorch_model.safetensors"]}
    meta, _ = split_header(space_header(README, "sd15", preload=got))
    assert meta["preload_from_hub"][1] == "a/canny config.json,diffusion_pytorch_model.safetensors"


# --- (g) the command line, offline -----------------------------------------------------------------------------

def test_cli_dry_run_offline_lists_no_local_files():
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(ROOT / ".no-home")}
    run = subprocess.run([sys.executable, "-m", "playground", "deploy", "some/space", "--dry-run", "--preset", "sdxl"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    listed = [line.split()[-1] for line in run.stdout.splitlines() if re.match(r"^\s*[\d,]+\s+\S+$", line)]
    assert "app.py" in listed and "checkpoints/tiny_sd/model_index.json" in listed
    assert not [n for n in listed if n.startswith(("runs/", ".venv/", ".git/")) or "__pycache__" in n]
    assert "preload_from_hub: computed at upload time" in run.stdout
    assert "suggested_hardware: zero-a10g" in run.stdout and "python_version: '3.11'" in run.stdout
    assert re.search(rf"^{len(listed)} files, [\d.]+ MB -> some/space \(dry run\)$", run.stdout, re.M)


class FakeHubApi(FakeApi):
    """Records what a (non-dry-run) deploy asks of the Hub; the models' listings are the fake SD 1.5 ones."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.calls: list[tuple] = []
        self.ops: list = []
        self.repos = {m: (SD15, SD15_INDEX) if "stable-diffusion" in m else (CANNY, None)
                      for m in PRESETS["sd15"].models()}

    def list_repo_files(self, repo_id: str, repo_type: str | None = None) -> list[str]:
        return [".gitattributes", "README.md", "old.txt"] if repo_type == "space" else super().list_repo_files(repo_id)

    def __getattr__(self, name: str):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return {} if name == "get_space_variables" else type("Info", (), {"commit_url": "u"})()
        return record

    def create_commit(self, repo_id: str, operations: list, **kwargs) -> object:
        self.ops = list(operations)
        return self.__getattr__("create_commit")(repo_id, **kwargs)


def test_deploy_makes_one_commit_with_the_space_header(tmp_path: Path):
    from playground.deploy import deploy

    root = tmp_path / "repo"
    for name in ["app.py", "checkpoints/m/model.safetensors", "runs/x/last.pt"]:
        _write(root, name)
    (root / "README.md").write_text(README, encoding="utf-8")
    _git(root, "init", "-q")
    _git(root, "add", "-f", ".")
    api = FakeHubApi(tmp_path)
    assert deploy("me/space", preset="sd15", hardware="a10g-small", root=root, api=api, out=lambda s: None) == 0
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "add_space_variable", "request_space_hardware", "create_commit"]
    assert api.calls[0][2] == {"repo_type": "space", "space_sdk": "gradio", "exist_ok": True, "private": False}
    assert api.calls[1][1] == ("me/space", "PLAYGROUND_PRESET", "sd15")
    adds = {op.path_in_repo: op for op in api.ops if type(op).__name__ == "CommitOperationAdd"}
    assert sorted(adds) == ["README.md", "app.py", "checkpoints/m/model.safetensors"]
    assert [op.path_in_repo for op in api.ops if type(op).__name__ == "CommitOperationDelete"] == ["old.txt"]
    meta, _ = split_header(adds["README.md"].path_or_fileobj.decode("utf-8"))
    assert meta["suggested_hardware"] == "a10g-small"
    sd15 = select_files(SD15, pipeline_components(SD15_INDEX))
    assert meta["preload_from_hub"] == [preload_line(m, sd15 if "stable-diffusion" in m else select_files(CANNY))
                                        for m in PRESETS["sd15"].models()]
