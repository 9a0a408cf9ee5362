"""Model cards: the ``README.md`` beside every checkpoint, regenerated from the files next to it
(``config.json``, ``training.json``, ``metrics.json``), so the card never disagrees with them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text, read_json


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    if isinstance(v, (list, dict)):
        return "`" + json.dumps(v) + "`"
    return str(v)


def _table(d: dict[str, Any]) -> str:
    rows = ["| figure | value |", "| --- | --- |"]
    rows += [f"| {k} | {_fmt(v)} |" for k, v in d.items()]
    return "\n".join(rows)


def _is_records(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)


def _rows(rows: list[dict[str, Any]]) -> str:
    """A list of records as one Markdown table (columns in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def write_card(folder: Path, title: str, summary: str, command: str, data: str,
               extra_sections: dict[str, str] | None = None, raw_metrics: bool = True) -> Path:
    """``folder/README.md`` from its ``config.json``, ``training.json`` and ``metrics.json``. With
    ``raw_metrics=False`` the nested figures of ``metrics.json`` are left to ``extra_sections`` (which
    render them as readable tables); scalar figures are always listed."""
    config = read_json(folder / "config.json", {})
    training = read_json(folder / "training.json", {})
    metrics = read_json(folder / "metrics.json", {})
    scalars = {k: v for k, v in metrics.items() if not (isinstance(v, dict) or _is_records(v))}
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "README.md")
    sizes = {p: (folder / p).stat().st_size for p in files}
    parts = [
        f"# {title}", "", summary, "",
        "## Reproduce", "", "```bash", command, "```", "",
        "Training is deterministic for a seed and resumes from `runs/<name>/last.pt` if interrupted.", "",
        "## Data", "", data, "",
        "## Training", "",
        _table(training) if training else "(no training record)", "",
        "## Measured figures", "",
        ("Measured by `python -m playground evaluate` on this machine (2-core CPU)"
         + ("." if raw_metrics else "; the figures are in the sections below.")) if metrics else "(not evaluated yet)",
        "",
    ]
    if scalars:
        parts += [_table(scalars), ""]
    for key, value in (metrics if raw_metrics else {}).items():
        if isinstance(value, dict):
            parts += [f"### {key}", "", _table(value), ""]
        elif _is_records(value):
            parts += [f"### {key}", "", _rows(value), ""]
    for head, body in (extra_sections or {}).items():
        parts += [f"## {head}", "", body, ""]
    parts += ["## Configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", "",
              "## Files", "", *[f"- `{p}` ({sizes[p] / 1024:.0f} KiB)" for p in files], ""]
    path = folder / "README.md"
    atomic_write_text(path, "\n".join(parts))
    return path
