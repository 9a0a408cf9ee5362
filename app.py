"""Generative Playground: every tab, assembled. Run ``python app.py`` (http://127.0.0.1:7860)."""
from __future__ import annotations

import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# On ZeroGPU, `spaces` patches torch's CUDA entry points and must come before anything that could touch CUDA;
# elsewhere its decorator is a no-op (playground/ui/gpu.py).
import spaces  # noqa: E402, F401

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from playground.core.settings import Settings, get_settings  # noqa: E402
from playground.diffusion.service import DiffusionService  # noqa: E402
from playground.gan import live_process  # noqa: E402
from playground.gan.service import GANService  # noqa: E402
from playground.latent.controlnet import ControlNetService  # noqa: E402
from playground.latent.inpaint import InpaintService  # noqa: E402
from playground.latent.service import Txt2ImgService  # noqa: E402
from playground.ui import common, controlnet_tab, diffusion_tab, gan_tab, gpu, inpaint_tab, txt2img_tab, vae_tab  # noqa: E402
from playground.vae.service import VAEService  # noqa: E402

HEADER = """
# Generative Playground
Explore generative models point-and-click — every picture here is computed live by a model trained
on a CPU, and every control sits beside the equation it changes.
"""


def build_app(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or get_settings()
    # Requests run in parallel worker threads and our models are small: intra-op threads would only
    # compete with each other (measured: a 64x512 matmul at 2 threads under load took 16 ms, vs 46 us
    # at 1), so the app defaults to one thread per op.
    torch.set_num_threads(settings.torch_threads or 1)
    # The queue's worker count per event. Gradio reads it when the Blocks context closes (which
    # enables the queue); calling demo.queue() again afterwards would rebuild the whole server app.
    os.environ["GRADIO_DEFAULT_CONCURRENCY_LIMIT"] = str(settings.concurrency)
    vae, gan, diffusion = VAEService(settings), GANService(settings), DiffusionService(settings)
    txt2img = Txt2ImgService(settings)
    inpaint, controlnet = InpaintService(txt2img, settings), ControlNetService(txt2img, settings)
    for service in (txt2img, inpaint, controlnet):
        service.defer_hub_loading()   # configured (Hub) models load after the server listens; tabs say "Loading …"
    vae.warmup()  # load every model now: no visitor's first request waits on loading
    gan.warmup()
    diffusion.warmup()
    # What needs diffusers (its import takes ~5 s and holds the GIL) and the live trainer's fork server
    # warm up in the background once the server listens: see main().
    demo_warmups = [("diffusion-solvers", diffusion.warm_solvers), ("txt2img-warm", txt2img.warmup),
                    ("inpaint-warm", inpaint.warmup), ("controlnet-warm", controlnet.warmup),
                    ("live-forkserver", live_process.warm_up)]
    # delete_cache: every 10 min, drop served files older than 30 min (live pictures add up).
    with gr.Blocks(title="Generative Playground", delete_cache=(600, 1800)) as demo:
        gr.Markdown(HEADER)
        with gr.Tabs():
            with gr.Tab("VAE", id="vae"):
                vae_tab.build(vae)
            with gr.Tab("GAN", id="gan"):
                gan_tab.build(gan)
            with gr.Tab("Diffusion", id="diffusion"):
                diffusion_tab.build(diffusion)
            with gr.Tab("Text to image", id="txt2img"):
                txt2img_built = txt2img_tab.build(txt2img)
            with gr.Tab("img2img", id="img2img"):
                txt2img_tab.build_img2img(txt2img, txt2img_built)
            last_generated = txt2img_built[0] if txt2img_built else None
            with gr.Tab("Inpainting", id="inpaint"):
                inpainted = inpaint_tab.build(inpaint, last_generated)
            with gr.Tab("ControlNet", id="controlnet"):
                sources = {"Use the last text-to-image result": last_generated,
                           "Use the last inpainting result": inpainted}
                controlnet_tab.build(controlnet, {k: v for k, v in sources.items() if v is not None})
    demo.background_warmups = demo_warmups
    return demo


def start_background_warmups(demo: gr.Blocks) -> None:
    """Run the deferred warm-ups (see build_app), each in its own daemon thread."""
    def run(fn):
        gpu.thread_init()        # ZeroGPU's CUDA emulation is per thread
        fn()

    for name, fn in getattr(demo, "background_warmups", []):
        threading.Thread(target=run, args=(fn,), name=name, daemon=True).start()


def main() -> None:
    settings = get_settings()
    demo = build_app(settings)
    demo.launch(server_name=settings.host, server_port=settings.port, theme=common.THEME, css=common.CSS,
                show_error=True, prevent_thread_lock=True)
    start_background_warmups(demo)
    demo.block_thread()


if __name__ == "__main__":
    main()
