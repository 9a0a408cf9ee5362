"""Which files of a Hub model repository diffusers' ``from_pretrained`` needs (for Spaces' ``preload_from_hub``).

Pure functions over a repository's file list (``HfApi().list_repo_files``: paths with "/"); nothing here
touches the network. The rule mirrors ``from_pretrained(..., use_safetensors=True, variant=variant)``:
per folder, the ``variant`` weights when that folder has any, else the plain ones; safetensors only.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

WEIGHT_PREFIXES = ("diffusion_pytorch_model", "model")     # diffusers' and transformers' weight file names
CONFIG_SUFFIXES = (".json", ".txt", ".model")               # configs, tokenizers (vocab, merges, sentencepiece)
_PREFIX = "(?:" + "|".join(WEIGHT_PREFIXES) + ")"
_SHARD = r"-\d{5}-of-\d{5}"
_PLAIN_WEIGHTS = re.compile(rf"^{_PREFIX}(?:{_SHARD})?\.safetensors$")
_PLAIN_INDEX = re.compile(rf"^{_PREFIX}\.safetensors\.index\.json$")
_ANY_INDEX = re.compile(r"\.index(?:\.[^./]+)?\.json$|\.[^./]+\.index\.json$")


def _variant_patterns(variant: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(weights, index) of ``variant``: ``model.fp16.safetensors``, ``model.fp16-00001-of-00002.safetensors``
    and the legacy ``model-00001-of-00002.fp16.safetensors``; ``model.safetensors.index.fp16.json`` and the
    legacy ``model.safetensors.fp16.index.json``."""
    v = re.escape(variant)
    weights = re.compile(rf"^{_PREFIX}(?:\.{v}(?:{_SHARD})?|{_SHARD}\.{v})\.safetensors$")
    index = re.compile(rf"^{_PREFIX}\.safetensors(?:\.index\.{v}|\.{v}\.index)\.json$")
    return weights, index


def _folder_files(names: list[str], variant: str | None, configs: bool = True) -> list[str]:
    """The needed file names among ``names`` (one folder's, without the folder): its config files
    (``configs``) and its weights — the ``variant`` ones if the folder has any, else the plain ones."""
    chosen = [n for n in names if n.endswith(CONFIG_SUFFIXES) and not _ANY_INDEX.search(n)] if configs else []
    weights: list[str] = []
    if variant:
        w_re, i_re = _variant_patterns(variant)
        weights = [n for n in names if w_re.match(n)]
        if weights:
            weights += [n for n in names if i_re.match(n)]
    if not weights:
        weights = [n for n in names if _PLAIN_WEIGHTS.match(n)]
        if weights:
            weights += [n for n in names if _PLAIN_INDEX.match(n)]
    return chosen + weights


def select_files(files: list[str], components: list[str] | None = None, variant: str | None = "fp16") -> list[str]:
    """The files of a Hub repository that ``from_pretrained(..., use_safetensors=True, variant=variant)`` reads.

    ``files``: the repository's paths (``HfApi().list_repo_files``). ``components``: for a pipeline repository
    the component folders named in its ``model_index.json`` (see :func:`pipeline_components`); then the result
    is ``model_index.json`` plus, inside each component folder, its ``*.json`` / ``*.txt`` / ``*.model`` files
    and its safetensors weights. ``None``: a single-model repository (a ControlNet, a VAE), whose root holds
    ``config.json`` and the weights. In each folder the ``.{variant}.safetensors`` weights (shards and their
    index included) are taken when the folder has any, else the plain ones (no ``.fp16.``, ``.ema.``, …
    infix). Never ``.bin`` / ``.ckpt`` / ``.onnx`` / ``.msgpack`` / ``.h5`` / ``.pb``, images, nested folders
    or a pipeline's root-level single-file checkpoints. Sorted.
    """
    if components is None:
        root = [f for f in files if "/" not in f]
        config = ["config.json"] if "config.json" in root else []
        return sorted(config + _folder_files(root, variant, configs=False))
    chosen = ["model_index.json"] if "model_index.json" in files else []
    for comp in dict.fromkeys(components):
        names = [f[len(comp) + 1:] for f in files if f.startswith(comp + "/") and f.count("/") == 1]
        chosen += [f"{comp}/{n}" for n in _folder_files(names, variant)]
    return sorted(chosen)


def pipeline_components(model_index: Mapping[str, object]) -> list[str]:
    """The component folders of a pipeline's ``model_index.json``: keys whose value is a ``[library, class]``
    list with a class (``"safety_checker": [null, null]`` and ``_class_name`` etc. are not components)."""
    return sorted(k for k, v in model_index.items() if not k.startswith("_") and isinstance(v, list)
                  and len(v) == 2 and v[1] is not None)


def preload_line(repo_id: str, files: list[str]) -> str:
    """One ``preload_from_hub`` entry of a Space's README header: ``"<repo_id> <file1>,<file2>,..."``.

    An empty ``files`` is refused: the bare repository id would preload every file of it (for SD 1.5 the
    ``.ckpt`` and ``.bin`` copies too, tens of GB)."""
    if not files:
        raise ValueError(f"{repo_id}: no files to preload (the bare id would fetch the whole repository)")
    if any(" " in f or "," in f for f in files):
        raise ValueError(f"{repo_id}: a file name with a space or a comma cannot be listed in preload_from_hub")
    return f"{repo_id} {','.join(files)}"
