"""``python -m playground bench``: the speed figures the issues ask for, measured in one run.

- in-process latency of slider -> decoded image (service call + display conversion);
- ``/vae_decode`` through ``gradio_client`` against the launched app, beside a no-op endpoint that
  returns an image of the same size from a bare one-button Gradio app (Gradio's own floor);
- cold start (``python app.py`` until the first answered API call) against that bare app;
- the live 2-D GAN trainer watched as the browser does: training steps/s, new pictures/s, and the
  seconds until the ring of 8 Gaussians is covered;
- the app's peak resident memory.
"""
from __future__ import annotations

import os
import time
from typing import Any

from .core.timing import summary


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
        out[f"slider_to_image_{model}"] = summary(times[10:])
    from .gan.service import GANService

    gan = GANService(registry=ModelRegistry())
    for model in gan.available():
        times = []
        for i in range(max(repeats // 5, 20)):
            t = time.perf_counter()
            gan.sample_tensor(model, 64, i)
            times.append(time.perf_counter() - t)
        out[f"gan_sample64_{model}"] = summary(times[3:])
    return out


def run_bench(quick: bool = False, calls: int = 60, only: str | None = None) -> dict[str, Any]:
    import platform

    import torch

    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "torch": torch.__version__, "torch_threads": torch.get_num_threads()}}
    if only == "hub":                   # configured (real-architecture) models vs the CPU app
        from .ui.bench_hub import hub_families

        out["hub"] = hub_families(calls=2 if quick else min(calls, 5), cold_runs=1 if quick else 3)
        return out
    if only == "latent":                # the text-to-image family's served latencies alone
        from .ui.bench_served import latent_latency

        out["latent"] = latent_latency(calls=10 if quick else min(calls, 30))
        return out
    out["in_process"] = in_process(60 if quick else 300)
    from .ui.bench_served import served  # the API client side lives with the UI it measures

    out["served"] = served(calls=10 if quick else calls, cold_runs=1 if quick else 3, live_seconds=8 if quick else 30)
    return out
