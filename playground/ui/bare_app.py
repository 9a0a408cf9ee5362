"""A bare one-button Gradio app: the floor that `python -m playground bench` compares the real app
against (cold start, and the round trip of no-op endpoints returning images of the same sizes).

    python playground/ui/bare_app.py PORT
"""
import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

IMG = Image.new("L", (224, 224), 0)     # the size of /vae_decode's answer
TILE = Image.new("L", (112, 112), 0)    # the size of one /gan_sample image


def noop(z: str) -> Image.Image:
    return IMG


def noop16(z: str) -> list[Image.Image]:
    return [TILE] * 16


with gr.Blocks() as demo:
    box = gr.Textbox()
    btn = gr.Button("Go")
    out = gr.Image(format="png", type="pil")
    btn.click(noop, box, out, api_name="noop", concurrency_limit=None)
    btn2 = gr.Button("Sixteen")
    gal = gr.Gallery(format="png")
    btn2.click(noop16, box, gal, api_name="noop16")

if __name__ == "__main__":
    demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
