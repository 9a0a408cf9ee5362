"""The GAN lesson (seed §4-5): five GANs side by side, latent walks, training curves, and a small
GAN on 2-D data that trains live while you watch."""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from ..gan.service import GAN_MODELS, INTERPOLATIONS, MAX_TRUNCATION, GANService
from .common import md, show, user_errors

INTRO = r"""
### Generative adversarial networks
A **generator** $G$ turns noise $z$ into a digit; a **discriminator** $D$ tries to tell real digits
from generated ones. They play a game: $D$ gets better at spotting fakes, $G$ gets better at fooling
$D$. Sample the five GANs of the seed side by side, watch for *mode collapse* in their class
histograms, walk the latent space, and train a GAN yourself on 2-D points.
"""

EQ_GAME = r"""
**Minimax game** (Goodfellow et al. 2014, eq. 1)
$$\min_G \max_D\; \mathbb E_{x\sim p_\text{data}}[\log D(x)] + \mathbb E_{z\sim p(z)}[\log(1 - D(G(z)))]$$

**Non-saturating trick** (same paper, §3): early on $D$ rejects fakes easily and
$\log(1-D(G(z)))$ has no gradient, so $G$ instead maximises $\log D(G(z))$.

**Wasserstein GAN** (Arjovsky et al. 2017): a *critic* $f$ (no sigmoid) estimates
$$W(p_\text{data}, p_G) \approx \max_{\|f\|_L \le 1} \mathbb E_x[f(x)] - \mathbb E_z[f(G(z))]$$
with the Lipschitz constraint enforced by clipping the weights to $[-c, c]$ (here $c = 0.01$).

**Gradient penalty** (Gulrajani et al. 2017, eq. 3): instead of clipping,
$$\lambda\, \mathbb E_{\hat x}\big[(\|\nabla_{\hat x} f(\hat x)\|_2 - 1)^2\big],\quad \hat x = \epsilon x + (1-\epsilon) G(z),\ \lambda = 10.$$
"""

EQ_COMPARE = r"""
All models get **the same** $z$ (same seed; the conditional GAN cycles through the digits 0-9).
Under each digit: the discriminator's verdict — $P(\text{real}) = \sigma(D(x))$ for the BCE models,
the critic value $f(x)$ for the WGANs (only differences between samples mean something there).
The class histogram comes from our held-out digit classifier: a generator that draws only a few
digits has **collapsed** (seed §4.4).
"""

EQ_TRUNC = r"""
**Truncation** $\psi$: sample $z \sim \mathcal N(0, \psi^2 I)$. Small $\psi$ stays near the centre of
the prior — typical, clean, less varied digits; $\psi > 1$ reaches into the tails.
"""


def _hist_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"digit": str(d), "count": c, "model": r["label"]} for r in results for d, c in enumerate(r["histogram"])]
    return pd.DataFrame(rows, columns=["digit", "count", "model"])


def _curve_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    names = {"d_loss": "D / critic loss", "g_loss": "G loss", "wasserstein": "Wasserstein estimate",
             "val_frechet": "Fréchet distance (validation, ÷100)"}
    data = []
    for r in rows:
        for k, label in names.items():
            if k in r and not (k == "wasserstein" and r[k] == 0.0):
                data.append({"epoch": r["epoch"], "value": r[k] / (100 if k == "val_frechet" else 1), "series": label})
    return pd.DataFrame(data, columns=["epoch", "value", "series"])


def build(service: GANService) -> None:
    models = service.available()
    choices = [(GAN_MODELS[m][1], m) for m in models]
    md(INTRO, elem_classes="lesson-intro")

    # ---- 1. sample one model ------------------------------------------------------------------
    with gr.Tab("Sample", id="gan-sample"):
        with gr.Row():
            with gr.Column(scale=1):
                model = gr.Dropdown(choices, value=models[0], label="Model", elem_id="gan-model")
                n = gr.Slider(1, service.limits.max_samples, value=16, step=1, label="Number of digits")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                label = gr.Dropdown([("any (cycle 0-9)", -1)] + [(str(d), d) for d in range(10)], value=-1,
                                    label="Digit (conditional GAN only)", interactive=True)
                trunc = gr.Slider(0.05, MAX_TRUNCATION, value=1.0, step=0.05, label="Truncation ψ")
                btn = gr.Button("Sample", variant="primary")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Samples", columns=8, height=420, format="png", elem_classes="pixelated",
                                     elem_id="gan-gallery")
            with gr.Column(scale=2):
                md(EQ_TRUNC, elem_classes="equation")
                md(EQ_GAME, elem_classes="equation")

        @user_errors
        def sample_api(model: str, n: float, seed: float, label: float, truncation: float):
            """``n`` digits from GAN ``model`` for ``seed`` (row i depends only on seed and i)."""
            imgs = service.sample(model, n, seed, label, truncation)
            return [show(im, 4, model=model, seed=seed, label=label, truncation=truncation, index=i)
                    for i, im in enumerate(imgs)]

        btn.click(sample_api, [model, n, seed, label, trunc], gallery, api_name="gan_sample")
        model.change(lambda m: gr.Dropdown(value=-1, interactive=m == "cgan"), model, label,
                     api_visibility="private", show_progress="hidden")

    # ---- 2. compare all five -----------------------------------------------------------------
    with gr.Tab("Compare all", id="gan-compare"):
        with gr.Row():
            c_n = gr.Slider(4, 36, value=16, step=1, label="Digits per model")
            c_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            c_trunc = gr.Slider(0.05, MAX_TRUNCATION, value=1.0, step=0.05, label="Truncation ψ")
            c_btn = gr.Button("Compare on the same z", variant="primary")
        with gr.Row():
            with gr.Column(scale=3):
                c_gallery = gr.Gallery(label="Same z, five GANs (number under each digit: D's score)", columns=5,
                                       height=380, format="png", elem_id="gan-compare-gallery", object_fit="contain")
                c_hist = gr.BarPlot(_hist_frame([]), x="digit", y="count", color="model",
                                    title="Class histogram per model (held-out classifier)", height=280)
            with gr.Column(scale=2):
                md(EQ_COMPARE, elem_classes="equation")

        @user_errors
        def compare_api(n: float, seed: float, truncation: float):
            """All models on the same z: galleries (with D scores) and class histograms."""
            res = service.compare(n, seed, truncation)
            gal = [(show(r["grid"], 1, model=r["model"], seed=seed, truncation=truncation),
                    f"{r['label']} — mean {r['score_kind']} {sum(r['scores']) / len(r['scores']):+.2f}") for r in res]
            return gal, _hist_frame(res)

        c_btn.click(compare_api, [c_n, c_seed, c_trunc], [c_gallery, c_hist], api_name="gan_compare")

    # ---- 3. latent walk ----------------------------------------------------------------------
    with gr.Tab("Latent walk", id="gan-walk"):
        with gr.Row():
            with gr.Column(scale=1):
                w_model = gr.Dropdown(choices, value=models[0], label="Model")
                with gr.Row():
                    seed_a = gr.Number(value=1, precision=0, minimum=0, label="Seed A")
                    seed_b = gr.Number(value=2, precision=0, minimum=0, label="Seed B")
                w_steps = gr.Slider(2, service.limits.max_interp_steps, value=12, step=1, label="Steps")
                w_label = gr.Dropdown([("none", -1)] + [(str(d), d) for d in range(10)], value=-1,
                                      label="Digit (conditional GAN only)")
                w_method = gr.Radio(list(INTERPOLATIONS), value="slerp", label="Interpolation")
                w_btn = gr.Button("Walk", variant="primary")
            with gr.Column(scale=3):
                strip = gr.Gallery(label="z(A) → z(B)", columns=12, height=200, format="png", elem_classes="pixelated",
                                   elem_id="gan-strip")

        @user_errors
        def interpolate_api(model: str, seed_a: float, seed_b: float, steps: float, label: float, method: str):
            """Decode a walk from z(seed_a) to z(seed_b) with GAN ``model``."""
            frames = service.interpolate(model, seed_a, seed_b, steps, label, method)
            return [show(f, 4, model=model, seed_a=seed_a, seed_b=seed_b, index=i) for i, f in enumerate(frames)]

        w_btn.click(interpolate_api, [w_model, seed_a, seed_b, w_steps, w_label, w_method], strip,
                    api_name="gan_interpolate")

    # ---- 4. training curves --------------------------------------------------------------------
    with gr.Tab("Training curves", id="gan-curves"):
        cm = gr.Dropdown(choices, value=models[0], label="Model")
        curves = gr.LinePlot(_curve_frame(service.history(models[0])), x="epoch", y="value", color="series",
                             title="Losses per epoch", height=360)
        cm.change(lambda m: _curve_frame(service.history(m)), cm, curves, api_visibility="private")
