"""The served half of ``python -m playground bench``: the launched app against the bare reference app
(``bare_app.py`` beside this file), through ``gradio_client``, in one run."""
from __future__ import annotations

import concurrent.futures
import os
import socket
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
from .gan_tab import LIVE_TICK
from ..core.settings import REPO_ROOT

BARE_APP = Path(__file__).with_name("bare_app.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _stat(stats: str, key: str) -> str:
    """The value after ``key`` in the live trainer's Markdown stats line (bold markers removed)."""
    return stats.split(key)[1].lstrip("*").split("*")[0].split(" ")[0].strip() if key in stats else ""


def live(client: Any, loss: str = "wgan-gp", seconds: float = 30.0, tick: float = LIVE_TICK) -> dict[str, Any]:
    """One learner's live 2-D run, watched the way the browser's timer does (a /gan_live_tick call
    every ``tick`` s): training steps per wall-clock second, *new* pictures per second, and the
    seconds until all 8 modes of the ring are covered."""
    import hashlib

    from ..gan.live import RECOMMENDED

    rec = RECOMMENDED[loss]
    args = dict(dataset="ring", loss=loss, lr_g=rec["lr_g"], lr_d=rec["lr_d"], d_steps=rec["d_steps"], seed=0,
                arrows="motion")
    client.predict(**args, api_name="/gan_live_reset")
    t0 = time.perf_counter()
    client.predict(**args, api_name="/gan_live_play")
    seen, steps, covered_at, last = set(), [], None, ""
    next_tick = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next_tick += tick
        img, stats = client.predict(arrows="motion", api_name="/gan_live_tick")[:2]
        now = time.perf_counter() - t0
        if img:
            seen.add(hashlib.md5(Path(img).read_bytes()).hexdigest())
        steps.append((now, int(_stat(stats, "step ") or 0)))
        if covered_at is None and _stat(stats, "modes covered ") == "8/8":
            covered_at = now
        last = stats
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    client.predict(arrows="motion", api_name="/gan_live_pause")
    (ta, sa), (tb, sb) = steps[len(steps) // 10], steps[-1]      # skip the start-up second
    return {"loss": loss, "seconds": round(steps[-1][0], 1), "steps": sb,
            "steps_per_second": round((sb - sa) / (tb - ta), 1),
            "new_pictures_per_second": round(len(seen) / steps[-1][0], 2),
            "ring_all_8_modes_after_s": None if covered_at is None else round(covered_at, 1),
            "last_stats": last}


def _file_urls(value: Any) -> list[str]:
    """The URLs of the files in one streamed message (``download_files=False`` leaves them on the server)."""
    if isinstance(value, dict):
        url = value.get("url")
        return [url] if isinstance(url, str) else [u for v in value.values() for u in _file_urls(v)]
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in _file_urls(v)]
    url = getattr(value, "url", None)
    return [url] if isinstance(url, str) else []


def diffusion_stream(url: str, n: int = 4, model: str = "unet") -> dict[str, Any]:
    """DDPM (1000 steps) vs DDIM (50) for ``n`` digits at guidance 3 through ``/denoise_compare``, received
    the way a browser receives it: the event stream's messages as they arrive, and each frame's four
    pictures fetched concurrently (8 connections) while the stream goes on. A frame counts as *shown*
    when all its pictures are in; the figures are frames per second over the run and the longest gap
    between two shown frames (and, for comparison, between two messages)."""
    import httpx
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    arrivals: list[float] = []
    shown: list[concurrent.futures.Future] = []
    pool = concurrent.futures.ThreadPoolExecutor(8)
    http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=8))

    def fetch(u: str) -> float:
        http.get(u).raise_for_status()
        return time.perf_counter() - t0

    def frame_done(futures: list[concurrent.futures.Future]) -> float:
        return max([f.result() for f in futures] or [time.perf_counter() - t0])

    t0 = time.perf_counter()
    job = client.submit(right="ddim", steps=50, eta=0.0, seed=0, label=3, guidance_scale=3.0, n=n, model=model,
                        api_name="/denoise_compare")
    last = None
    try:
        for out in job:
            arrivals.append(time.perf_counter() - t0)
            futures = [pool.submit(fetch, u) for u in _file_urls(out)]
            shown.append(pool.submit(frame_done, futures))
            last = out
        shown_at = [f.result() for f in shown[:-1]]               # the last message is the final result
    finally:
        pool.shutdown(wait=True)
        http.close()
    frames = arrivals[:-1]

    def gaps(ts: list[float]) -> list[float]:
        ts = sorted(ts)
        return [b - a for a, b in zip(ts, ts[1:])]

    def fps(ts: list[float]) -> float:
        return round(len(ts) / max(max(ts) - min(ts), 1e-9), 2) if len(ts) > 1 else 0.0

    g_msg, g_shown = gaps(frames), gaps(shown_at)
    return {"n": n, "total_seconds": round(arrivals[-1], 2), "frames": len(frames),
            "frames_per_second": fps(shown_at), "longest_gap_s": round(max(g_shown), 3) if g_shown else None,
            "gaps_over_0.2_s": sum(g > 0.2 for g in g_shown),
            "message_frames_per_second": fps(frames),
            "longest_message_gap_s": round(max(g_msg), 3) if g_msg else None,
            "final_status": (last or [""] * 5)[4]}


def _latent_pairs(app: Any, index: Callable[[], int]) -> list[tuple[str, Callable[[], Any]]]:
    """The latent-diffusion endpoints to time, when the app serves them with a trained model:
    ``/txt2img`` (one 64×64 image, 25 DPM-Solver++ steps, guidance 7.5, a new seed per call) and the
    ``/canny`` preview of a 64×64 scene (thresholds varied per call)."""
    from gradio_client import handle_file

    endpoints = app.view_api(return_format="dict", print_info=False)["named_endpoints"]
    pairs: list[tuple[str, Callable[[], Any]]] = []
    if "/txt2img" in endpoints:
        def txt2img(seed: int | None = None) -> Any:
            return app.predict(prompt="a large red circle", negative_prompt="", steps=25, guidance_scale=7.5,
                               seed=index() if seed is None else seed, scheduler="DPM++ 2M", n=1,
                               api_name="/txt2img")
        try:
            txt2img(seed=0)
            pairs.append(("txt2img", txt2img))
        except Exception:  # noqa: BLE001 - not trained here: nothing to time
            pass
    if "/canny" in endpoints:
        from ..data.scenes import render_dataset

        path = Path(tempfile.mkdtemp()) / "scene.png"
        Image.fromarray((render_dataset(1, seed=5).images[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
        pairs.append(("canny", lambda: app.predict(image=handle_file(str(path)), low=80 + index() % 40, high=200,
                                                   api_name="/canny")))
    return pairs


def served(calls: int = 60, cold_runs: int = 3, live_seconds: float = 30.0) -> dict[str, Any]:
    """Cold starts and API latency of the real app vs a bare one-button app, measured together."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PLAYGROUND_HOST="127.0.0.1")
    bare = BARE_APP
    z = [0.3] * 20
    cold: dict[str, list[float]] = {"app": [], "bare": []}
    lives: list[dict[str, Any]] = []
    diffusion: dict[str, Any] = {}
    lat: dict[str, list[float]] = {"vae_decode": [], "noop": [], "gan_sample16": [], "noop16": []}
    extra_latent: dict[str, Any] = {}
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
                pairs += _latent_pairs(clients["app"], lambda: i)
                for i in range(calls + 5):
                    for name, fn in pairs:
                        t = time.perf_counter()
                        fn()
                        if i >= 5:
                            lat.setdefault(name, []).append(time.perf_counter() - t)
                from gradio_client import Client

                url = clients["app"].src
                if "/denoise_compare" in clients["app"].view_api(return_format="dict",
                                                                  print_info=False)["named_endpoints"]:
                    diffusion = diffusion_stream(url)
                if live_seconds > 0:
                    lives = [live(Client(url, verbose=False), loss, live_seconds) for loss in ("wgan-gp", "bce")]
                rss.append(_peak_rss_mb(dict((w, p) for w, p, _ in procs)["app"].pid))
        finally:
            for _, proc, _ in procs:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    dec, noop = summary(lat["vae_decode"]), summary(lat["noop"])
    for name in ("txt2img", "canny"):
        if lat.get(name):
            extra_latent[f"api_{name}"] = summary(lat[name])
    if lat.get("canny"):
        extra_latent["api_canny_ratio_p50"] = round(extra_latent["api_canny"]["p50_ms"] / noop["p50_ms"], 3)
    extra: dict[str, Any] = ({"live_2d": lives} if live_seconds > 0 else {}) | extra_latent
    if diffusion:
        extra["diffusion_compare_stream"] = diffusion
    if lat["gan_sample16"]:
        g16, n16 = summary(lat["gan_sample16"]), summary(lat["noop16"])
        extra |= {"api_gan_sample16": g16, "api_noop_gallery16": n16,
                 "api_gan_ratio_p50": round(g16["p50_ms"] / n16["p50_ms"], 3)}
    return {
        "api_vae_decode": dec, "api_noop_image": noop,
        "api_ratio_p50": round(dec["p50_ms"] / noop["p50_ms"], 3), **extra,
        "cold_start_app_s": [round(x, 2) for x in cold["app"]],
        "cold_start_bare_s": [round(x, 2) for x in cold["bare"]],
        "cold_start_ratio_median": round(statistics.median(cold["app"]) / statistics.median(cold["bare"]), 3),
        "app_peak_rss_mb": rss[-1] if rss else None,
    }


def latent_latency(calls: int = 30, warm_seconds: float = 20.0) -> dict[str, Any]:
    """``/txt2img`` and ``/canny`` of the real app against the bare app's no-op image endpoint, interleaved
    call by call in one run (``python -m playground bench --only latent``), after the app's background
    warm-ups (``warm_seconds``)."""
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PLAYGROUND_HOST="127.0.0.1")
    procs = []
    lat: dict[str, list[float]] = {"noop": []}
    try:
        clients = {}
        commands = {"bare": [sys.executable, str(BARE_APP)], "app": [sys.executable, str(REPO_ROOT / "app.py")]}
        for which, cmd in commands.items():
            port = _free_port()
            proc, _, client = _start(cmd + ([str(port)] if which == "bare" else []), port,
                                     dict(env, PLAYGROUND_PORT=str(port)))
            procs.append(proc)
            clients[which] = client
        time.sleep(warm_seconds)
        i = 0
        pairs = [("noop", lambda: clients["bare"].predict("x", api_name="/noop"))]
        pairs += _latent_pairs(clients["app"], lambda: i)
        for i in range(calls + 3):
            for name, fn in pairs:
                t = time.perf_counter()
                fn()
                if i >= 3:
                    lat.setdefault(name, []).append(time.perf_counter() - t)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = {f"api_{k}": summary(v) for k, v in lat.items() if v}
    if "api_canny" in out:
        out["api_canny_ratio_p50"] = round(out["api_canny"]["p50_ms"] / out["api_noop"]["p50_ms"], 3)
    return out
