"""The autoencoder / VAE lesson (seed §2-3): latent sliders, the 2-d map, prior samples AE vs VAE,
interpolation, drawing, colour scenes, equations and training curves."""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from ..vae.service import DIGIT_MODELS, INTERPOLATIONS, VAEService
from .common import md, show, user_errors

N_SLIDERS = 8      # the most informative dimensions of a 20-d model get a slider each
DIGIT_SCALE = 8    # 28 px digits shown as 224 px squares
SCENE_SCALE = 4

INTRO = r"""
### Autoencoders and variational autoencoders
An **autoencoder** squeezes a 28×28 digit (784 numbers) through a small code $z$ and rebuilds it.
A **VAE** makes that code *probabilistic* and pulls it towards a standard normal prior, so that any
$z \sim \mathcal N(0, I)$ decodes to a plausible digit: you can *sample*. Drag the sliders, click the
map, draw a digit — and compare with the plain autoencoder, which cannot sample.
"""

EQ_ELBO = r"""
**Evidence lower bound** (Kingma & Welling 2013, eq. 3)

$$\log p_\theta(x) \;\ge\; \underbrace{\mathbb E_{q_\phi(z\mid x)}\big[\log p_\theta(x\mid z)\big]}_{-\text{reconstruction (BCE, nats)}} \;-\; \underbrace{\mathrm{KL}\big(q_\phi(z\mid x)\,\|\,p(z)\big)}_{\text{KL (nats)}}$$

**KL between Gaussians** (their Appendix B), with $q = \mathcal N(\mu, \operatorname{diag}\sigma^2)$, $p = \mathcal N(0, I)$:

$$\mathrm{KL} = -\tfrac12 \sum_{j=1}^{D} \big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big)$$

**Reparameterisation trick** (§2.4): $z = \mu + \sigma \odot \varepsilon,\ \varepsilon \sim \mathcal N(0, I)$ —
the randomness becomes an input, so gradients flow into $\mu$ and $\sigma$.

**β-VAE** (Higgins et al. 2017): loss $=$ BCE $+\ \beta\cdot$KL; $\beta > 1$ trades sharpness for a
smoother, more disentangled code.
"""

EQ_SLIDERS = r"""
Each slider moves one coordinate of $z$; the decoder $p_\theta(x \mid z)$ draws the mean image
$\sigma(f_\theta(z))$. Dimensions are ordered by their average KL over the test digits — the
*active units*: a dimension with KL ≈ 0 is ignored by the decoder (posterior collapse), so moving it
changes nothing. Try the same with the plain autoencoder, whose code has no prior.
"""

EQ_INTERP = r"""
**Linear**: $z_t = (1-t)\,z_A + t\,z_B$.

**Spherical** (slerp, Shoemake 1985; White 2016): with $\cos\Omega = \hat z_A\!\cdot\!\hat z_B$,
$$z_t = \frac{\sin((1-t)\Omega)}{\sin\Omega}\,z_A + \frac{\sin(t\Omega)}{\sin\Omega}\,z_B$$
keeps $\|z_t\|$ near the norm of typical prior samples ($\approx\sqrt D$), where a straight line
dips towards the origin.
"""

EQ_PRIOR = r"""
Both decoders receive **the same** $z \sim \mathcal N(0, I)$ (same seed). The VAE was trained so that
$q(z\mid x)$ stays close to this prior, so its samples look like digits. The autoencoder's code was
never asked to look like anything — its encoder even ends in a ReLU, so it has never seen a negative
coordinate: decoding prior samples gives smudges (seed §2.2).
"""

EQ_CONV = r"""
The seed's convolutional VAE (§3.5): strided convolutions $32\!\to\!16\!\to\!8\!\to\!4$, a 128-d
Gaussian code, transposed convolutions back to 32×32×3. **Blurriness is the lesson**: the
Bernoulli/Gaussian likelihood averages over everything the code cannot pin down, so edges smear
and small objects fade — one reason GANs and diffusion models took over image synthesis.
"""


def _z_text(z: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in z) + "]"


def _history_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    series = {"train_neg_elbo": "train −ELBO (augmented)", "val_neg_elbo": "validation −ELBO",
              "val_kl": "validation KL", "val_recon": "validation reconstruction"}
    data = [{"epoch": r["epoch"], "nats": r[k], "series": label}
            for r in rows for k, label in series.items() if k in r]
    return pd.DataFrame(data, columns=["epoch", "nats", "series"]).astype({"epoch": int, "nats": float})


def build(service: VAEService) -> None:
    """Lay out the VAE tab inside the current ``gr.Blocks`` / ``gr.Tab`` context."""
    models = service.available()
    slider_models = [m for m in ("vae20", "bvae20", "ae") if m in models]
    md(INTRO, elem_classes="lesson-intro")

    # ---- 1. latent sliders --------------------------------------------------------------------
    with gr.Tab("Latent sliders", id="vae-sliders"):
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Dropdown([(DIGIT_MODELS[m], m) for m in slider_models], value=slider_models[0],
                                    label="Model", elem_id="vae-model")
                dims0 = service.slider_dims(slider_models[0])[:N_SLIDERS]
                z0 = service.encode_test_digit(0, slider_models[0])["z"]
                sliders = [gr.Slider(-4, 4, value=max(-4.0, min(4.0, z0[d])), step=0.01, label=f"z[{d}]",
                                     elem_id=f"vae-slider-{i}") for i, d in enumerate(dims0)]
                with gr.Row():
                    digit_index = gr.Number(value=0, precision=0, minimum=0, maximum=999,
                                            label="Test digit # (0-999)")
                    reset_btn = gr.Button("Reset to this digit")
                with gr.Row():
                    rand_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    rand_btn = gr.Button("Randomise z ~ N(0, I)")
            with gr.Column(scale=2):
                decoded = gr.Image(show(service.decode(z0, slider_models[0]), DIGIT_SCALE),
                                   label="Decoded x̂ = decoder(z)", format="png", type="pil", height=260,
                                   elem_id="vae-decoded", elem_classes="pixelated", interactive=False)
                z_box = gr.Textbox(_z_text(z0),
                                   label="z (the whole code; edit and press Enter to decode it)",
                                   lines=3, elem_id="vae-z")
                dims_state = gr.State(dims0)
            with gr.Column(scale=2):
                md(EQ_SLIDERS, elem_classes="equation")

        @user_errors
        def on_slide(name: str, z_txt: str, dims: list[int], *values: float):
            z = service.with_dims(z_txt, dims, values, name)
            img = service.decode(z, name)
            return show(img, DIGIT_SCALE, model=name, z=z), _z_text(z)

        @user_errors
        def decode_api(z: Any, model: str):
            """Decode a latent vector ``z`` (list of floats, or its JSON text) with ``model``."""
            return show(service.decode(z, model), DIGIT_SCALE, model=model, z=str(z))

        def set_code(name: str, z: list[float], dims: list[int]):
            img = service.decode(z, name)
            return [show(img, DIGIT_SCALE, model=name, z=z), _z_text(z)] + [
                gr.Slider(value=max(-4.0, min(4.0, z[d]))) for d in dims]

        @user_errors
        def on_model(name: str):
            dims = service.slider_dims(name)[:N_SLIDERS]
            z = service.encode_test_digit(0, name)["z"]
            return [dims] + set_code(name, z, dims)[:2] + [
                gr.Slider(label=f"z[{d}]", value=max(-4.0, min(4.0, z[d]))) for d in dims]

        @user_errors
        def on_reset(name: str, index: float, dims: list[int]):
            return set_code(name, service.encode_test_digit(index, name)["z"], dims)

        @user_errors
        def on_random(name: str, seed: float, dims: list[int]):
            return set_code(name, service.random_z(seed, name), dims)

        for s in sliders:
            s.input(on_slide, [model, z_box, dims_state, *sliders], [decoded, z_box],
                    trigger_mode="always_last", show_progress="hidden", api_visibility="private",
                    concurrency_limit=None)
        z_box.submit(decode_api, [z_box, model], decoded, api_name="vae_decode", concurrency_limit=None)
        model.change(on_model, model, [dims_state, decoded, z_box, *sliders], api_visibility="private")
        reset_btn.click(on_reset, [model, digit_index, dims_state], [decoded, z_box, *sliders],
                        api_visibility="private")
        rand_btn.click(on_random, [model, rand_seed, dims_state], [decoded, z_box, *sliders],
                       api_visibility="private")

    # ---- 2. the 2-d latent map ----------------------------------------------------------------
    if "vae2" in models:
        with gr.Tab("2-d latent map", id="vae-map"):
            with gr.Row():
                with gr.Column(scale=3):
                    latent_map = gr.Image(service.latent_map_image([0.0, 0.0]), label="Latent map — click anywhere",
                                          type="pil", format="png", interactive=False, elem_id="vae-map",
                                          height=460)
                    md("Background: the decoder's output on a grid over $[-3, 3]^2$. Dots: the "
                                "1,000 test digits' posterior means $\\mu(x)$, coloured by class "
                                "(0 blue, 1 orange, 2 green, 3 red, 4 purple, 5 brown, 6 pink, 7 grey, "
                                "8 olive, 9 cyan).", elem_classes="figure-note")
                with gr.Column(scale=2):
                    z1 = gr.Slider(-3, 3, value=0.0, step=0.01, label="z₁", elem_id="vae-map-z1")
                    z2 = gr.Slider(-3, 3, value=0.0, step=0.01, label="z₂", elem_id="vae-map-z2")
                    map_decoded = gr.Image(show(service.decode([0.0, 0.0], "vae2"), DIGIT_SCALE), label="Decoded", type="pil",
                                           format="png", interactive=False, height=240, elem_classes="pixelated",
                                           elem_id="vae-map-decoded")

            @user_errors
            def map_slide(a: float, b: float):
                return show(service.decode([a, b], "vae2"), DIGIT_SCALE, model="vae2", z=[a, b])

            @user_errors
            def map_release(a: float, b: float):
                return service.latent_map_image([a, b])

            @user_errors
            def map_select(evt: gr.SelectData):
                x, y = evt.index
                a, b = service.map_click(x, y)
                return (a, b, show(service.decode([a, b], "vae2"), DIGIT_SCALE, model="vae2", z=[a, b]),
                        service.latent_map_image([a, b]))

            for s in (z1, z2):
                s.input(map_slide, [z1, z2], map_decoded, trigger_mode="always_last", show_progress="hidden",
                        api_visibility="private", concurrency_limit=None)
                s.release(map_release, [z1, z2], latent_map, show_progress="hidden", api_visibility="private")
            latent_map.select(map_select, None, [z1, z2, map_decoded, latent_map], api_visibility="private")

    # ---- 3. prior samples: AE vs VAE --------------------------------------------------------
    with gr.Tab("Sample: AE vs VAE", id="vae-prior"):
        with gr.Row():
            with gr.Column(scale=1):
                n = gr.Slider(1, service.limits.max_samples, value=16, step=1, label="Number of samples")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="vae-prior-seed")
                cmp_btn = gr.Button("Sample both with the same z", variant="primary")
                sample_model = gr.Dropdown([(DIGIT_MODELS[m], m) for m in models], value=models[0],
                                           label="…or one model, as a gallery")
                sample_btn = gr.Button("Sample gallery")
            with gr.Column(scale=3):
                ae0, vae0 = service.prior_comparison(16, 0)
                with gr.Row():
                    ae_grid = gr.Image(show(ae0, 4), label="Autoencoder: decoder(z), z ~ N(0, I)", type="pil",
                                       format="png",
                                       interactive=False, elem_classes="pixelated", elem_id="vae-ae-grid")
                    vae_grid = gr.Image(show(vae0, 4), label="VAE: decoder(z), same z", type="pil", format="png",
                                        interactive=False, elem_classes="pixelated", elem_id="vae-vae-grid")
                gallery = gr.Gallery(label="Samples", columns=8, height=300, format="png",
                                     elem_classes="pixelated", elem_id="vae-gallery")
            with gr.Column(scale=2):
                md(EQ_PRIOR, elem_classes="equation")

        @user_errors
        def compare(n: float, seed: float):
            """The same ``n`` prior codes (``seed``) decoded by the autoencoder and by the VAE."""
            a, b = service.prior_comparison(n, seed)
            return show(a, 4, model="ae", n=n, seed=seed), show(b, 4, model="vae20", n=n, seed=seed)

        @user_errors
        def sample_api(n: float, seed: float, model: str):
            """``n`` digits decoded from z ~ N(0, I) with ``seed``; sample i depends only on (seed, i)."""
            return [show(im, 4, model=model, seed=seed, index=i) for i, im in enumerate(service.sample(n, seed, model))]

        cmp_btn.click(compare, [n, seed], [ae_grid, vae_grid], api_name="vae_compare_prior")
        sample_btn.click(sample_api, [n, seed, sample_model], gallery, api_name="vae_sample")

    # ---- 4. interpolation ---------------------------------------------------------------------
    with gr.Tab("Interpolate", id="vae-interp"):
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    a_idx = gr.Number(value=7, precision=0, minimum=0, maximum=999, label="Digit A (test #)")
                    b_idx = gr.Number(value=905, precision=0, minimum=0, maximum=999, label="Digit B (test #)")
                with gr.Row():
                    a_img = gr.Image(service.test_digit(7), label="A", height=110, interactive=False, format="png",
                                     type="pil", elem_classes="pixelated", show_label=True)
                    b_img = gr.Image(service.test_digit(905), label="B", height=110, interactive=False, format="png",
                                     type="pil", elem_classes="pixelated")
                steps = gr.Slider(2, service.limits.max_interp_steps, value=10, step=1, label="Steps")
                method = gr.Radio(list(INTERPOLATIONS), value="linear", label="Interpolation")
                interp_model = gr.Dropdown([(DIGIT_MODELS[m], m) for m in models], value=models[0], label="Model")
                interp_btn = gr.Button("Interpolate A → B", variant="primary")
                with gr.Accordion("…or start from your own drawing", open=False):
                    a_sketch = gr.Sketchpad(label="Draw A", type="pil", image_mode="RGBA", layers=False,
                                            canvas_size=(200, 200), elem_id="vae-interp-sketch",
                                            placeholder="Pick the brush, draw a digit",
                                            brush=gr.Brush(default_size=14, colors=["#000000"], color_mode="fixed"))
                    interp_draw_btn = gr.Button("Interpolate my drawing → B")
            with gr.Column(scale=3):
                strip = gr.Gallery(label="A → B", columns=12, height=200, format="png", elem_classes="pixelated",
                                   elem_id="vae-strip")
            with gr.Column(scale=2):
                md(EQ_INTERP, elem_classes="equation")

        @user_errors
        def interpolate_api(digit_a: float, digit_b: float, steps: float, method: str, model: str):
            """Decode ``steps`` codes between test digits ``digit_a`` and ``digit_b`` (indices 0-999)."""
            frames = service.interpolate(digit_a, digit_b, steps, method, model)
            return [show(f, 4, model=model, a=digit_a, b=digit_b, method=method, index=i)
                    for i, f in enumerate(frames)]

        @user_errors
        def preview(index: float):
            return show(service.test_digit(index), 1, test_index=index)

        a_idx.change(preview, a_idx, a_img, api_visibility="private", show_progress="hidden")
        b_idx.change(preview, b_idx, b_img, api_visibility="private", show_progress="hidden")
        @user_errors
        def interpolate_drawing(drawing: Any, digit_b: float, steps: float, method: str, model: str):
            frames = service.interpolate(drawing, digit_b, steps, method, model)
            return [show(f, 4, model=model, a="drawing", b=digit_b, method=method, index=i)
                    for i, f in enumerate(frames)]

        interp_btn.click(interpolate_api, [a_idx, b_idx, steps, method, interp_model], strip,
                         api_name="vae_interpolate")
        interp_draw_btn.click(interpolate_drawing, [a_sketch, b_idx, steps, method, interp_model], strip,
                              api_visibility="private")

    # ---- 5. draw a digit ----------------------------------------------------------------------
    with gr.Tab("Draw a digit", id="vae-draw"):
        with gr.Row():
            with gr.Column(scale=2):
                sketch = gr.Sketchpad(label="Draw", type="pil", image_mode="RGBA", layers=False,
                                      placeholder="Pick the brush (left), then draw a digit",
                                      canvas_size=(280, 280), elem_id="vae-sketch",
                                      brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"))
                upload = gr.Image(label="…or upload a digit image", type="pil", height=160, elem_id="vae-upload",
                                  sources=["upload", "clipboard"])
                enc_model = gr.Dropdown([(DIGIT_MODELS[m], m) for m in models], value=models[0], label="Model")
            with gr.Column(scale=2):
                with gr.Row():
                    seen = gr.Image(label="What the model sees (28×28)", type="pil", format="png", interactive=False,
                                    elem_classes="pixelated", height=170)
                    recon = gr.Image(label="Reconstruction", type="pil", format="png", interactive=False,
                                     elem_classes="pixelated", height=170, elem_id="vae-recon")
                elbo = md("", elem_id="vae-elbo")
                z_out = gr.JSON(label="z = μ(x)")
            with gr.Column(scale=2):
                where = gr.Image(label="Where it lands on the 2-d map", type="pil", format="png", interactive=False,
                                 height=320)
                md(EQ_ELBO, elem_classes="equation")

        def encode_outputs(out: dict, name: str, image: Any):
            md = (f"**−ELBO = {out['neg_elbo_nats']:.1f} nats** = reconstruction "
                  f"{out['recon_nats']:.1f} + KL {out['kl_nats']:.1f}  \n"
                  "(test digits average about the figure in the model card; an odd drawing costs more)")
            spot = service.latent_map_image(service.encode(image, "vae2")["z"]) if "vae2" in models else None
            return out["z"], show(out["reconstruction"], DIGIT_SCALE, model=name), show(out["input"], DIGIT_SCALE), md, spot

        @user_errors
        def encode_api(image: Any, model: str):
            """Encode an image of a digit: returns (z, reconstruction, input as seen, ELBO split, map)."""
            return encode_outputs(service.encode(image, model), model, image)

        outs = [z_out, recon, seen, elbo, where]
        upload.upload(encode_api, [upload, enc_model], outs, api_name="vae_encode")
        sketch.change(encode_api, [sketch, enc_model], outs, api_visibility="private", trigger_mode="always_last",
                      show_progress="hidden")

    # ---- 6. colour scenes ---------------------------------------------------------------------
    if (service.settings.checkpoints_dir / "convvae" / "model.safetensors").exists():
        with gr.Tab("Colour scenes (ConvVAE)", id="vae-scenes"):
            with gr.Row():
                with gr.Column(scale=1):
                    scene_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    scene_btn = gr.Button("Reconstruct and sample", variant="primary")
                with gr.Column(scale=3):
                    orig = gr.Image(label="Held-out scenes", type="pil", format="png", interactive=False, elem_classes="pixelated")
                    rec = gr.Image(label="ConvVAE reconstructions", type="pil", format="png", interactive=False,
                                   elem_classes="pixelated")
                    smp = gr.Image(label="Samples from the prior", type="pil", format="png", interactive=False,
                                   elem_classes="pixelated")
                with gr.Column(scale=2):
                    md(EQ_CONV, elem_classes="equation")

            @user_errors
            def scenes_fn(seed: float):
                a, b = service.scene_reconstructions(8, seed)
                c = service.scene_samples(8, seed)
                return (show(a, SCENE_SCALE, seed=seed), show(b, SCENE_SCALE, seed=seed),
                        show(c, SCENE_SCALE, seed=seed))

            scene_btn.click(scenes_fn, scene_seed, [orig, rec, smp], api_name="vae_scenes")

    # ---- 7. training curves -------------------------------------------------------------------
    with gr.Tab("Training curves", id="vae-curves"):
        curve_models = models + (["convvae"] if (service.settings.checkpoints_dir / "convvae" / "history.csv").exists() else [])
        curve_model = gr.Dropdown([(DIGIT_MODELS.get(m, "ConvVAE (scenes)"), m) for m in curve_models],
                                  value=curve_models[0], label="Model")
        plot = gr.LinePlot(_history_frame(service.history(curve_models[0])), x="epoch", y="nats", color="series",
                           title="Loss per digit (nats)", height=360)
        curve_model.change(lambda m: _history_frame(service.history(m)), curve_model, plot, api_visibility="private")
