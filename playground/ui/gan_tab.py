"""The GAN lesson (seed §4-5): five GANs side by side, latent walks, training curves, and a small
GAN on 2-D data that trains live while you watch."""
from __future__ import annotations

import tempfile
from typing import Any

import gradio as gr
import pandas as pd

from ..core.errors import UserInputError
from ..core.images import animated_gif
from ..gan import live
from ..gan.live_process import LiveRunner
from ..gan.service import GAN_MODELS, INTERPOLATIONS, MAX_TRUNCATION, TRUNCATIONS, GANService
from .common import md, show, user_errors

LIVE_SIZE = 360            # pixels of the live picture
LIVE_TICK = 0.15           # seconds between timer ticks (up to ~6.7 pictures a second)

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
**Truncation** $\psi$ (Brock et al. 2019): *rescale* samples $z \sim \mathcal N(0, \psi^2 I)$;
*clip* keeps $z \sim \mathcal N(0, I)$ but clamps each coordinate to $[-\psi, \psi]$. Small $\psi$
stays near the centre of the prior — typical, clean, less varied digits; $\psi > 1$ (rescale)
reaches into the tails.
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
    return pd.DataFrame(data, columns=["epoch", "value", "series"]).astype({"epoch": int, "value": float})


def build(service: GANService) -> None:
    models = service.available()
    md(INTRO, elem_classes="lesson-intro")
    if models:
        build_digits(service, models)
    build_live()


def build_digits(service: GANService, models: list[str]) -> None:
    """Sampling, comparison, latent walk and curves of the trained digit GANs."""
    choices = [(GAN_MODELS[m][1], m) for m in models]

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
                mode = gr.Radio(list(TRUNCATIONS), value="rescale", label="Truncation: rescale z or clip it")
                btn = gr.Button("Sample", variant="primary")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Samples", columns=4, height=460, format="png", elem_classes="pixelated",
                                     elem_id="gan-gallery")
            with gr.Column(scale=2):
                md(EQ_TRUNC, elem_classes="equation")
                md(EQ_GAME, elem_classes="equation")

        @user_errors
        def sample_api(model: str, n: float, seed: float, label: float, truncation: float, mode: str = "rescale"):
            """``n`` digits from GAN ``model`` for ``seed`` (row i depends only on seed and i)."""
            imgs = service.sample(model, n, seed, label, truncation, mode)
            return [show(im, 4, model=model, seed=seed, label=label, truncation=truncation, mode=mode, index=i)
                    for i, im in enumerate(imgs)]

        btn.click(sample_api, [model, n, seed, label, trunc, mode], gallery, api_name="gan_sample")
        model.change(lambda m: gr.Dropdown(value=-1, interactive=m == "cgan"), model, label,
                     api_visibility="private", show_progress="hidden")

    # ---- 2. compare all five -----------------------------------------------------------------
    with gr.Tab("Compare all", id="gan-compare"):
        with gr.Row():
            c_n = gr.Slider(4, 36, value=16, step=1, label="Digits per model")
            c_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
            c_trunc = gr.Slider(0.05, MAX_TRUNCATION, value=1.0, step=0.05, label="Truncation ψ")
            c_mode = gr.Radio(list(TRUNCATIONS), value="rescale", label="Truncation mode")
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
        def compare_api(n: float, seed: float, truncation: float, mode: str = "rescale"):
            """All models on the same z: galleries (with D scores) and class histograms."""
            res = service.compare(n, seed, truncation, mode)
            gal = [(show(r["grid"], 1, model=r["model"], seed=seed, truncation=truncation),
                    f"{r['label']} — mean {r['score_kind']} {sum(r['scores']) / len(r['scores']):+.2f}") for r in res]
            return gal, _hist_frame(res)

        c_btn.click(compare_api, [c_n, c_seed, c_trunc, c_mode], [c_gallery, c_hist], api_name="gan_compare")

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
                movie = gr.Image(label="As an animation (there and back)", type="filepath", height=240,
                                 interactive=False, elem_classes="pixelated", elem_id="gan-walk-gif")

        @user_errors
        def interpolate_api(model: str, seed_a: float, seed_b: float, steps: float, label: float, method: str):
            """Decode a walk from z(seed_a) to z(seed_b) with GAN ``model``."""
            frames = service.interpolate(model, seed_a, seed_b, steps, label, method)
            gif = animated_gif(frames, tempfile.NamedTemporaryFile(suffix=".gif", delete=False).name, scale=8)
            return [show(f, 4, model=model, seed_a=seed_a, seed_b=seed_b, index=i) for i, f in enumerate(frames)], str(gif)

        w_btn.click(interpolate_api, [w_model, seed_a, seed_b, w_steps, w_label, w_method], [strip, movie],
                    api_name="gan_interpolate")

    # ---- 4. training curves --------------------------------------------------------------------
    with gr.Tab("Training curves", id="gan-curves"):
        cm = gr.Dropdown(choices, value=models[0], label="Model")
        curves = gr.LinePlot(_curve_frame(service.history(models[0])), x="epoch", y="value", color="series",
                             title="Losses per epoch", height=360)
        cm.change(lambda m: _curve_frame(service.history(m)), cm, curves, api_visibility="private")


EQ_LIVE = r"""
**Train a GAN yourself** on points in the plane (like GAN Lab). Background: the discriminator's
opinion — orange where it says *real*, blue where it says *fake*. Dark dots: data; green dots: the
generator's samples $G(z)$; arrows: where each sample moved since the last picture (or the push
$-\nabla_x$ of the generator's loss). Watch the green points flow into the orange regions, and
try BCE on the ring: it often covers only some of the 8 modes (mode collapse), where WGAN-GP
usually finds all of them. Each run is limited to 20,000 steps and 2 minutes of compute.
"""


def _live_stats(info: dict, modes: tuple[int, int], stopped: str = "") -> str:
    covered, total = modes
    w = info.get("wasserstein")
    parts = [f"**step {info['step']}**", f"{info['steps_per_second']:.0f} steps/s",
             f"D loss {info['d_loss']:.3f}" if info.get("d_loss") is not None else "",
             f"G loss {info['g_loss']:.3f}" if info.get("g_loss") is not None else "",
             f"Wasserstein estimate {w:.3f}" if w is not None else "",
             f"modes covered **{covered}/{total}**" if total else "",
             f"stopped: {info['reason']}" if info.get("done") else "",
             "paused: nobody was watching" if stopped == "abandoned" else ""]
    return " · ".join(p for p in parts if p)


def _live_losses(rows: list[dict]) -> pd.DataFrame:
    data = [{"step": r["step"], "value": r[k], "series": label} for r in rows
            for k, label in (("d_loss", "D loss"), ("g_loss", "G loss"), ("wasserstein", "Wasserstein estimate"))
            if r.get(k) is not None]
    return pd.DataFrame(data, columns=["step", "value", "series"]).astype({"step": int, "value": float})


def build_live() -> None:
    """The live 2-D trainer: one LiveGAN per browser session (gr.State), driven by a timer."""
    with gr.Tab("Train live (2-D)", id="gan-live"):
        session = gr.State(None)
        points = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                dataset = gr.Radio(list(live.DATASETS), value="ring", label="Data", elem_id="gan-live-data")
                loss = gr.Radio([("BCE (non-saturating)", "bce"), ("WGAN-GP", "wgan-gp")], value="wgan-gp",
                                label="Loss")
                with gr.Row():
                    lr_g = gr.Number(value=live.RECOMMENDED["wgan-gp"]["lr_g"], label="G learning rate")
                    lr_d = gr.Number(value=live.RECOMMENDED["wgan-gp"]["lr_d"], label="D learning rate")
                d_steps = gr.Slider(1, 10, value=live.RECOMMENDED["wgan-gp"]["d_steps"], step=1,
                                    label="D steps per G step")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                arrows = gr.Radio(list(live.ARROWS), value="motion", label="Arrows")
                with gr.Row():
                    play = gr.Button("Play", variant="primary", elem_id="gan-live-play")
                    pause = gr.Button("Pause", elem_id="gan-live-pause")
                with gr.Row():
                    step_btn = gr.Button("Step ×50", elem_id="gan-live-step")
                    reset = gr.Button("Reset", elem_id="gan-live-reset")
                clear = gr.Button("Clear my points", size="sm")
            with gr.Column(scale=2):
                picture = gr.Image(live.points_preview([], LIVE_SIZE), label="Real vs generated (click to add points "
                                   "when Data = custom)", type="pil", format="png", interactive=False,
                                   elem_id="gan-live-picture", height=LIVE_SIZE + 40)
                stats = md("Press **Play**.", elem_id="gan-live-stats")
            with gr.Column(scale=2):
                curve = gr.LinePlot(_live_losses([]), x="step", y="value", color="series", height=260,
                                    title="Losses")
                md(EQ_LIVE, elem_classes="equation")
                md(EQ_GAME, elem_classes="equation")
        timer = gr.Timer(LIVE_TICK, active=False)

        def new_runner(dataset: str, loss: str, lr_g: float, lr_d: float, d_steps: float, seed: float,
                       pts: list) -> LiveRunner:
            cfg = live.LiveConfig(dataset=dataset, loss=loss, lr_g=lr_g, lr_d=lr_d, d_steps=d_steps, seed=seed,
                                  points=pts if dataset == "custom" else None)
            return LiveRunner(live.LiveGAN(cfg.validate()))

        def frame(r: LiveRunner, arrows: str, wait: float = 0.0):
            if r.running:
                r.refresh(wait)        # the worker's newest weights, drawn here
            g = r.gan
            rows = r.loss_rows if r.running and r.loss_rows is not None else g.losses(max_points=200)
            return (r, g.render(LIVE_SIZE, arrows), _live_stats(r.info, g.modes_covered(), r.stopped),
                    _live_losses(rows))

        @user_errors
        def reset_api(r, dataset: str, loss: str, lr_g: float, lr_d: float, d_steps: float, seed: float,
                      arrows: str, pts: list):
            """Start a fresh live run with these settings (paused)."""
            if r is not None:
                r.pause()
            return (*frame(new_runner(dataset, loss, lr_g, lr_d, d_steps, seed, pts), arrows), gr.Timer(active=False))

        @user_errors
        def play_api(r, dataset: str, loss: str, lr_g: float, lr_d: float, d_steps: float, seed: float,
                     arrows: str, pts: list):
            """Train continuously (in a worker process) until paused or the run's budget is spent."""
            if r is None or r.gan.done:
                r = new_runner(dataset, loss, lr_g, lr_d, d_steps, seed, pts)
            r.play()
            return (*frame(r, arrows, wait=0.5), gr.Timer(active=True))

        @user_errors
        def pause_api(r, arrows: str):
            """Stop training (the run can be resumed with Play)."""
            if r is None:
                raise UserInputError("Nothing is running: press Play first.")
            r.pause()
            return (*frame(r, arrows), gr.Timer(active=False))

        @user_errors
        def step_api(r, n: float, arrows: str):
            """Run ``n`` optimisation steps of this session's run (pausing it first) and return the picture."""
            if r is None:
                raise UserInputError("Press Reset or Play first to start a run.")
            r.pause()
            r.info = r.gan.step(n)
            return (*frame(r, arrows), gr.Timer(active=False))

        @user_errors
        def tick_api(r, arrows: str):
            """The newest picture of the running training (the timer calls this 5 times a second)."""
            if r is None:
                return None, gr.update(), gr.update(), gr.update(), gr.Timer(active=False)
            out = frame(r, arrows, wait=0.1)
            if r.error:
                gr.Warning(r.error)
                return (*out[:2], f"**{r.error}**", out[3], gr.Timer(active=False))
            return (*out, gr.Timer(active=r.running))

        def on_click(s, dataset: str, pts: list, evt: gr.SelectData):
            if dataset != "custom":
                return pts, gr.update()
            pts = [*pts, live.pixel_to_data(evt.index[0], evt.index[1], LIVE_SIZE)][-200:]
            return pts, live.points_preview(pts, LIVE_SIZE)

        def on_dataset(dataset: str, pts: list):
            return live.points_preview(pts, LIVE_SIZE) if dataset == "custom" else gr.update()

        def on_loss(loss: str):
            rec = live.RECOMMENDED[loss]
            return rec["lr_g"], rec["lr_d"], rec["d_steps"]

        settings = [dataset, loss, lr_g, lr_d, d_steps, seed, arrows, points]
        outs = [session, picture, stats, curve]
        reset.click(reset_api, [session, *settings], [*outs, timer], api_name="gan_live_reset")
        play.click(play_api, [session, *settings], [*outs, timer], api_name="gan_live_play")
        pause.click(pause_api, [session, arrows], [*outs, timer], api_name="gan_live_pause")
        n_steps = gr.Number(50, visible=False)
        step_btn.click(step_api, [session, n_steps, arrows], [*outs, timer], api_name="gan_live_step",
                       concurrency_limit=2, concurrency_id="gan_live")
        timer.tick(tick_api, [session, arrows], [*outs, timer], api_name="gan_live_tick", show_progress="hidden",
                   concurrency_limit=None, trigger_mode="always_last")
        picture.select(on_click, [session, dataset, points], [points, picture], api_visibility="private")
        dataset.change(on_dataset, [dataset, points], picture, api_visibility="private")
        loss.change(on_loss, loss, [lr_g, lr_d, d_steps], api_visibility="private")
        clear.click(lambda: ([], live.points_preview([], LIVE_SIZE)), None, [points, picture], api_visibility="private")
