"""``python -m playground deploy SPACE_ID``: publish this checkout as a Hugging Face Space, in one commit.

Uploads through ``huggingface_hub`` (which stores binaries through Xet/LFS: a plain ``git push`` of the
checkpoints is refused by the Hub), leaving out ``runs/``, caches, virtual environments and anything git
does not track. The README's YAML header is rewritten for the Space: ``suggested_hardware`` and, for a GPU
preset, ``preload_from_hub`` so the Space fetches the preset's weights at build time (design §5).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .core.hub_files import pipeline_components, preload_line, select_files
from .core.presets import PRESETS, get_preset

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_BYTES = 10 * 1024 * 1024       # same bound as playground.core.checkpoint (no torch import here)
CPU_HARDWARE = "cpu-basic"              # free: 2 vCPU, 16 GB; the built-in models
GPU_HARDWARE = "zero-a10g"              # ZeroGPU: the default suggestion for a preset
PRELOAD_VARIANT = "fp16"                # the weights preloaded for a preset (diffusers' variant)

# The upload's denylist, applied by huggingface_hub.utils.filter_repo_objects exactly as upload_folder does
# (fnmatch, "*" crosses "/"; "dir/" means everything under the top-level dir). Its own defaults (.git,
# .cache/huggingface) are added to these.
IGNORE_PATTERNS: list[str] = [
    ".git/", ".venv/", "venv/", "*/.venv/*", "*/venv/*", "runs/",
    "__pycache__/", "*/__pycache__/*", "*.pyc", ".pytest_cache/", "*/.pytest_cache/*", ".ruff_cache/",
    ".mypy_cache/", ".cache/", ".gradio/", "*/.gradio/*", "test-results/", "bench*.json", "samples.png",
    ".ci/", ".env", ".idea/", ".vscode/", "*.egg-info/*", ".DS_Store", "*/.DS_Store",
]


def _git_files(root: Path, *args: str) -> set[str] | None:
    """``git ls-files ARGS`` in ``root`` (paths relative to it), or None when ``root`` is no git checkout."""
    try:
        inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, check=False)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", *args], capture_output=True,
                             text=True, check=True)
    except FileNotFoundError:                       # no git installed: the folder walk alone decides
        return None
    return {p for p in out.stdout.split("\0") if p}


def _walk(root: Path) -> list[str]:
    """Every file under ``root`` (no symlinks), as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _filtered(root: Path) -> list[str]:
    """The folder walk through ``IGNORE_PATTERNS`` and huggingface_hub's own defaults."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    return list(filter_repo_objects(_walk(root), ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def upload_files(root: Path) -> list[Path]:
    """The files a deploy uploads from ``root``, sorted: the folder walk filtered by ``IGNORE_PATTERNS``
    (as ``upload_folder`` filters) and, in a git checkout, restricted to the files git tracks, so untracked
    local files never leave the machine. Raises ``ValueError`` if a selected file exceeds 10 MB."""
    root = Path(root).resolve()
    names = _filtered(root)
    tracked = _git_files(root)
    if tracked is not None:
        names = [n for n in names if n in tracked]
    big = [f"{n} ({(root / n).stat().st_size / 1e6:.1f} MB)" for n in names
           if (root / n).stat().st_size > MAX_FILE_BYTES]
    if big:
        raise ValueError(f"files over {MAX_FILE_BYTES // 2**20} MB would be uploaded: {', '.join(big)}")
    return [root / n for n in names]


def untracked_files(root: Path) -> list[str]:
    """Files not ignored by git that it does not track either (left out of the upload: worth a warning)."""
    root = Path(root).resolve()
    others = _git_files(root, "--others", "--exclude-standard")
    return sorted(set(_filtered(root)) & others) if others else []


def split_header(readme_text: str) -> tuple[dict[str, Any], str]:
    """(the YAML header as a dict, the body after it) of a README; a README without one gives ``{}``."""
    if readme_text.startswith("---\n"):
        end = readme_text.find("\n---\n", 3)
        if end != -1:
            return yaml.safe_load(readme_text[4:end + 1]) or {}, readme_text[end + 5:]
    return {}, readme_text


def space_header(readme_text: str, preset: str | None = None, hardware: str | None = None,
                 preload: dict[str, list[str]] | None = None) -> str:
    """The README text with its YAML header set up for a Space.

    ``suggested_hardware`` = ``hardware``, else ``zero-a10g`` (ZeroGPU) for a ``preset``, else ``cpu-basic``.
    ``preload``: repository id -> the files to fetch at build time (:func:`preload_files`), written as
    ``preload_from_hub`` entries ``"<repo> <file>,<file>,..."``; without one any previous entry is dropped.
    Every other key (``sdk_version``, ``python_version``, ``models``, …) is kept as it is.
    """
    if preset:
        get_preset(preset)                  # an unknown name is an error
    meta, body = split_header(readme_text)
    meta["suggested_hardware"] = hardware or (GPU_HARDWARE if preset else CPU_HARDWARE)
    meta.pop("preload_from_hub", None)
    if preload:
        meta["preload_from_hub"] = [preload_line(repo, files) for repo, files in preload.items()]
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1_000_000, default_flow_style=False)
    return f"---\n{text}---\n{body}"


def preload_files(models: list[str], api: Any = None, variant: str | None = PRELOAD_VARIANT) -> dict[str, list[str]]:
    """Repository id -> the files ``from_pretrained`` reads from it (network: ``api.list_repo_files`` and, for a
    pipeline, its ``model_index.json`` through ``api.hf_hub_download`` for the component folders)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    out: dict[str, list[str]] = {}
    for repo in models:
        files = list(api.list_repo_files(repo))
        components = None
        if "model_index.json" in files:
            index = json.loads(Path(api.hf_hub_download(repo, "model_index.json")).read_text(encoding="utf-8"))
            components = pipeline_components(index)
        out[repo] = select_files(files, components, variant)
        if not any(f.endswith(".safetensors") for f in out[repo]):
            raise ValueError(f"{repo}: no safetensors weights found (files: {len(files)})")
    return out


def _check_hardware(hardware: str | None) -> None:
    from huggingface_hub import SpaceHardware

    known = [h.value for h in SpaceHardware]
    if hardware is not None and hardware not in known:
        raise ValueError(f"unknown hardware {hardware!r}; one of {', '.join(known)}")


def deploy(space_id: str, preset: str | None = None, hardware: str | None = None, private: bool = False,
           dry_run: bool = False, root: Path = ROOT, api: Any = None, out: Callable[[str], None] = print) -> int:
    """Create (or update) the Space ``space_id`` from ``root`` in one commit; ``dry_run`` prints instead."""
    preset = preset or None
    if preset:
        get_preset(preset)
    _check_hardware(hardware)
    files = upload_files(root)
    readme = (Path(root) / "README.md").read_text(encoding="utf-8")
    for name in untracked_files(root):
        print(f"not uploaded (not tracked by git): {name}", file=sys.stderr)
    if dry_run:
        for f in files:
            out(f"{f.stat().st_size:>12,}  {f.relative_to(Path(root).resolve()).as_posix()}")
        out(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB -> {space_id} (dry run)")
        if preset:
            out(f"preload_from_hub: computed at upload time from the Hub's file lists of "
                f"{', '.join(PRESETS[preset].models())}")
        out(space_header(readme, preset, hardware).split("\n---\n", 1)[0] + "\n---")
        return 0
    return _publish(space_id, preset, hardware, private, files, readme, Path(root).resolve(), api, out)


def _publish(space_id: str, preset: str | None, hardware: str | None, private: bool, files: list[Path],
             readme: str, root: Path, api: Any, out: Callable[[str], None]) -> int:
    """The network half of :func:`deploy`: repository, variables, hardware, then one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = api or HfApi()
    preload = preload_files(PRESETS[preset].models(), api) if preset else None
    header = space_header(readme, preset, hardware, preload)
    url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", exist_ok=True, private=private)
    if preset:
        api.add_space_variable(space_id, "PLAYGROUND_PRESET", preset)
    elif "PLAYGROUND_PRESET" in api.get_space_variables(space_id):
        api.delete_space_variable(space_id, "PLAYGROUND_PRESET")   # a CPU deploy serves the built-in models
    if hardware:
        api.request_space_hardware(space_id, hardware)
    names = [f.relative_to(root).as_posix() for f in files if f.name != "README.md" or f.parent != root]
    ops: list[Any] = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(root / n)) for n in names]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=header.encode("utf-8")))
    names.append("README.md")
    stale = set(api.list_repo_files(space_id, repo_type="space")) - set(names) - {".gitattributes"}
    ops += [CommitOperationDelete(path_in_repo=n) for n in sorted(stale)]
    info = api.create_commit(space_id, ops, commit_message="Deploy Generative Playground", repo_type="space")
    out(f"uploaded {len(names)} files (removed {len(stale)}) to {url}: {info.commit_url}")
    return 0
