"""``python -m playground bench --only hub``: the "real model" configuration, measured on this CPU in one run.

No GPU is lent to this project and the Hub is unreachable, so the configured models are tiny random-weight
pipelines with the real SD 1.5 and SDXL configurations (:mod:`playground.latent.tiny_architectures`), set
through the same variables a GPU Space uses. Measured, through ``gradio_client``:

- **cold start**: ``python app.py`` until its first answered API call (``/vae_decode``), with the SDXL-style set
  configured against the CPU app (nothing configured), interleaved run by run. Configured models load in the
  background after the server listens, so the ratio says whether loading holds the server;
- the seconds until the configured models answer (the first ``/txt2img`` that is not "Loading …");
- each endpoint of the text-to-image family for both families (p50 of ``calls`` calls, 25 steps where the
  endpoint takes steps, one image);
- each app's peak resident memory (VmHWM) after those calls.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.timing import summary
from ..core.settings import REPO_ROOT
from .bench_served import _free_port, _peak_rss_mb, _start

STEPS = 25
READY_TIMEOUT = 300.0


def _env(folders: dict[str, Path] | None) -> dict[str, str]:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PLAYGROUND_HOST="127.0.0.1")
    for key in ("PLAYGROUND_PRESET", "PLAYGROUND_TXT2IMG_MODEL", "PLAYGROUND_INPAINT_MODEL",
                "PLAYGROUND_CONTROLNET_MODEL", "PLAYGROUND_VAE_MODEL"):
        env.pop(key, None)
    if folders:
        env |= {"PLAYGROUND_TXT2IMG_MODEL": str(folders["txt2img"]), "PLAYGROUND_INPAINT_MODEL": str(folders["inpaint"]),
                "PLAYGROUND_CONTROLNET_MODEL": str(folders["controlnet"])}
        if "vae" in folders:
            env["PLAYGROUND_VAE_MODEL"] = str(folders["vae"])
    return env


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _launch(folders: dict[str, Path] | None) -> tuple[subprocess.Popen, float, Any]:
    """Start the app; returns (process, seconds to the first answered call, client)."""
    port = _free_port()
    proc, t0, client = _start([sys.executable, str(REPO_ROOT / "app.py")], port,
                              dict(_env(folders), PLAYGROUND_PORT=str(port)))
    client.predict(z=[0.3] * 20, model="vae20", api_name="/vae_decode")
    return proc, time.perf_counter() - t0, client


def _until_ready(call: Callable[[], Any]) -> float:
    """Seconds until ``call`` stops answering "Loading …"."""
    t0 = time.perf_counter()
    while True:
        try:
            call()
            return time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - gradio_client's AppError carries the message
            if "Loading" not in str(exc) or time.perf_counter() - t0 > READY_TIMEOUT:
                raise
            time.sleep(0.25)


def _endpoint_calls(client: Any, side: int, tmp: Path) -> dict[str, Callable[[int], Any]]:
    """Every endpoint of the text-to-image family, as calls taking a seed."""
    from gradio_client import handle_file

    from ..latent.inpaint import METHOD_BLEND, METHOD_NINE

    scene = tmp / f"scene{side}.png"
    img = Image.new("RGB", (side, side), "white")
    img.paste((220, 30, 30), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    img.save(scene)
    stroke = tmp / f"stroke{side}.png"
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (side // 8, side // 8, side // 2, side // 2))
    layer.save(stroke)
    editor = {"background": handle_file(str(scene)), "layers": [handle_file(str(stroke))],
              "composite": handle_file(str(scene)), "id": None}
    common = dict(negative_prompt="", guidance_scale=7.5)
    generated = tmp / f"generated{side}.png"

    def txt2img(seed: int) -> Any:
        out = client.predict(prompt="a red circle", steps=STEPS, seed=seed, scheduler="DPM++ 2M", n=1,
                             api_name="/txt2img", **common)
        shutil.copyfile(out[2][0]["image"], generated)         # the PNG as served, its parameters included
        return out

    def inpaint(method: str) -> Callable[[int], Any]:
        return lambda seed: client.predict(editor, "a blue square", "", 2, 0, 1.0, STEPS, 7.5, seed, method,
                                           "DPM++ 2M", None, 0, api_name="/inpaint")

    return {
        "txt2img": txt2img,
        "cfg_sweep": lambda seed: client.predict(prompt="a red circle", negative_prompt="", steps=STEPS, seed=seed,
                                                 scheduler="DPM++ 2M", api_name="/cfg_sweep"),
        "cfg_step": lambda seed: client.predict(prompt="a red circle", negative_prompt="", steps=STEPS, seed=seed,
                                                step_index=10, guidance_scale=7.5, api_name="/cfg_step"),
        "img2img": lambda seed: client.predict(handle_file(str(scene)), "a blue square", 0.6, STEPS, 7.5, seed,
                                               "DPM++ 2M", api_name="/img2img"),
        "read_png_params": lambda seed: client.predict(handle_file(str(generated)), api_name="/read_png_params"),
        "inpaint_nine": inpaint(METHOD_NINE),
        "inpaint_blend": inpaint(METHOD_BLEND),
        "canny": lambda seed: client.predict(handle_file(str(scene)), 80 + seed % 40, 200, api_name="/canny"),
        "controlnet": lambda seed: client.predict(handle_file(str(scene)), "a blue square", low=100, high=200,
                                                  conditioning_scale=1.0, steps=STEPS, guidance_scale=3.0, seed=seed,
                                                  scheduler="DPM++ 2M", api_name="/controlnet"),
    }


def hub_families(calls: int = 5, cold_runs: int = 3) -> dict[str, Any]:
    """Cold start with the SDXL-style set vs the CPU app, readiness, per-endpoint times and peak memory of
    both families (see the module docstring)."""
    from ..latent.tiny_architectures import NATIVE_SIZE, build_family

    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    sets = {f: build_family(tmp / "models", f) for f in ("sd15", "sdxl")}
    cold: dict[str, list[float]] = {"cpu": [], "sdxl": []}
    out: dict[str, Any] = {"steps": STEPS, "calls": calls}
    for _ in range(cold_runs):
        for which in ("cpu", "sdxl"):
            proc, seconds, _ = _launch(sets["sdxl"] if which == "sdxl" else None)
            cold[which].append(seconds)
            _stop(proc)
    out["cold_start_cpu_app_s"] = [round(x, 2) for x in cold["cpu"]]
    out["cold_start_sdxl_set_s"] = [round(x, 2) for x in cold["sdxl"]]
    out["cold_start_ratio_median"] = round(statistics.median(cold["sdxl"]) / statistics.median(cold["cpu"]), 3)
    for which in ("cpu", "sd15", "sdxl"):
        proc, seconds, client = _launch(sets.get(which))
        try:
            calls_by_name = _endpoint_calls(client, NATIVE_SIZE.get(which, 64), tmp)
            fam: dict[str, Any] = {"first_answer_s": round(seconds, 2)}
            fam["models_ready_s"] = round(_until_ready(lambda: calls_by_name["txt2img"](0)), 2)
            for name, call in calls_by_name.items():
                call(0)                                       # first-call set-up
                times = []
                for seed in range(1, calls + 1):
                    t = time.perf_counter()
                    call(seed)
                    times.append(time.perf_counter() - t)
                fam[f"api_{name}"] = summary(times)
            fam["peak_rss_mb"] = _peak_rss_mb(proc.pid)
            out[which] = fam
        finally:
            _stop(proc)
    return out
