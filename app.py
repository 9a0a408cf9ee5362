"""Generative Playground: every tab, assembled. Run ``python app.py`` (http://127.0.0.1:7860)."""
from __future__ import annotations

import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Cold start: torch's import (shared libraries, ~2 s) partly overlaps gradio's when started first in a
# thread; both are needed before the first request anyway (measured by `python -m playground bench`).
_torch_import = threading.Thread(target=__import__, args=("torch",), daemon=True)
_torch_import.start()

import gradio as gr  # noqa: E402

from playground.core.settings import Settings, get_settings  # noqa: E402
from playground.ui import common, vae_tab  # noqa: E402
from playground.vae.service import VAEService  # noqa: E402

HEADER = """
# Generative Playground
Explore generative models point-and-click — every picture here is computed live by a model trained
on a CPU, and every control sits beside the equation it changes.
"""


def build_app(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or get_settings()
    _torch_import.join()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    vae = VAEService(settings)
    vae.warmup()  # load every model now: no visitor's first request waits on loading
    with gr.Blocks(title="Generative Playground") as demo:
        gr.Markdown(HEADER)
        with gr.Tabs():
            with gr.Tab("VAE", id="vae"):
                vae_tab.build(vae)
    demo.queue(default_concurrency_limit=settings.concurrency)
    return demo


def main() -> None:
    settings = get_settings()
    demo = build_app(settings)
    demo.launch(server_name=settings.host, server_port=settings.port, theme=common.THEME, css=common.CSS,
                show_error=True)


if __name__ == "__main__":
    main()
