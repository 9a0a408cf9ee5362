"""``python -m playground bench``: the speed figures the issues ask for, measured in one run.

- in-process latency of slider -> decoded image (service call + display conversion);
- ``/vae_decode`` through ``gradio_client`` against the launched app, beside a no-op endpoint that
  returns an image of the same size from a bare one-button Gradio app (Gradio's own floor);
- cold start (``python app.py`` until the first answered API call) against that bare app;
- the app's peak resident memory.
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .core.settings import REPO_ROOT

BARE_APP = REPO_ROOT / "playground" / "ui" / "bare_app.py"  # the reference the app is measured against


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _summary(xs_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in xs_s]
    return {"p50_ms": round(statistics.median(ms), 3), "p90_ms": round(_pct(ms, 0.9), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def in_process(repeats: int = 300) -> dict[str, Any]:
    """Slider -> decoded, displayable image, in process (no network)."""
    from .core.registry import ModelRegistry
    from .core.images import for_display
    from .vae.service import VAEService

    svc = VAEService(registry=ModelRegistry())
    svc.warmup()
    out: dict[str, Any] = {}
    for model, dim in (("vae20", 20), ("vae2", 2)):
        if model not in svc.available():
            continue
        times = []
        for i in range(repeats):
            z = [((i * 7 + k) % 13 - 6) / 3 for k in range(dim)]
            t = time.perf_counter()
            for_display(svc.decode(z, model), 8, model=model, z=z)
            times.append(time.perf_counter() - t)
        out[f"slider_to_image_{model}"] = _summary(times[10:])
    from .gan.service import GANService

    gan = GANService(registry=ModelRegistry())
    for model in gan.available():
        times = []
        for i in range(max(repeats // 5, 20)):
            t = time.perf_counter()
            gan.sample_tensor(model, 64, i)
            times.append(time.perf_counter() - t)
        out[f"gan_sample64_{model}"] = _summary(times[3:])
    return out


def _start(cmd: list[str], port: int, env: dict[str, str]) -> tuple[subprocess.Popen, float, Any]:
    from gradio_client import Client

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = t0 + 240
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        try:
            client = Client(url, verbose=False)
            return proc, t0, client
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def served(calls: int = 60, cold_runs: int = 3) -> dict[str, Any]:
    """Cold starts and API latency of the real app vs a bare one-button app, measured together."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PLAYGROUND_HOST="127.0.0.1")
    bare = BARE_APP
    z = [0.3] * 20
    cold: dict[str, list[float]] = {"app": [], "bare": []}
    lat: dict[str, list[float]] = {"vae_decode": [], "noop": [], "gan_sample16": [], "noop16": []}
    rss = []
    for run in range(cold_runs):
        procs = []
        try:
            for which in ("bare", "app"):  # alternate order effects are small; same run, same machine
                port = _free_port()
                cmd = ([sys.executable, str(bare), str(port)] if which == "bare"
                       else [sys.executable, str(REPO_ROOT / "app.py")])
                e = dict(env, PLAYGROUND_PORT=str(port))
                proc, t0, client = _start(cmd, port, e)
                if which == "bare":
                    client.predict("x", api_name="/noop")
                else:
                    client.predict(z=z, model="vae20", api_name="/vae_decode")
                cold[which].append(time.perf_counter() - t0)
                procs.append((which, proc, client))
            if run == cold_runs - 1:  # latency on the last pair, interleaved call by call
                clients = {w: c for w, _, c in procs}
                gan = "/gan_sample" in clients["app"].view_api(return_format="dict",
                                                               print_info=False)["named_endpoints"]
                pairs = [("noop", lambda: clients["bare"].predict("x", api_name="/noop")),
                         ("vae_decode", lambda: clients["app"].predict(
                             z=[((i + k) % 9 - 4) / 2 for k in range(20)], model="vae20", api_name="/vae_decode"))]
                if gan:
                    pairs += [("noop16", lambda: clients["bare"].predict("x", api_name="/noop16")),
                              ("gan_sample16", lambda: clients["app"].predict(
                                  model="wgan-gp", n=16, seed=i, label=-1, truncation=1.0, api_name="/gan_sample"))]
                for i in range(calls + 5):
                    for name, fn in pairs:
                        t = time.perf_counter()
                        fn()
                        if i >= 5:
                            lat[name].append(time.perf_counter() - t)
                rss.append(_peak_rss_mb(dict((w, p) for w, p, _ in procs)["app"].pid))
        finally:
            for _, proc, _ in procs:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    dec, noop = _summary(lat["vae_decode"]), _summary(lat["noop"])
    extra: dict[str, Any] = {}
    if lat["gan_sample16"]:
        g16, n16 = _summary(lat["gan_sample16"]), _summary(lat["noop16"])
        extra = {"api_gan_sample16": g16, "api_noop_gallery16": n16,
                 "api_gan_ratio_p50": round(g16["p50_ms"] / n16["p50_ms"], 3)}
    return {
        "api_vae_decode": dec, "api_noop_image": noop,
        "api_ratio_p50": round(dec["p50_ms"] / noop["p50_ms"], 3), **extra,
        "cold_start_app_s": [round(x, 2) for x in cold["app"]],
        "cold_start_bare_s": [round(x, 2) for x in cold["bare"]],
        "cold_start_ratio_median": round(statistics.median(cold["app"]) / statistics.median(cold["bare"]), 3),
        "app_peak_rss_mb": rss[-1] if rss else None,
    }


def run_bench(quick: bool = False, calls: int = 60) -> dict[str, Any]:
    import platform

    import torch

    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "torch": torch.__version__, "torch_threads": torch.get_num_threads()}}
    out["in_process"] = in_process(60 if quick else 300)
    out["served"] = served(calls=10 if quick else calls, cold_runs=1 if quick else 3)
    return out
