"""The diffusion lesson (seed §6, 7, 10.1): the forward process, DDPM against DDIM step by step from
the same noise, classifier-free guidance, and what the number of steps costs in quality."""
from __future__ import annotations

import math
from typing import Any

import gradio as gr
import pandas as pd

from ..diffusion.service import (DDPM_MAX_SAMPLES, DIFFUSION_MODELS, MAX_GUIDANCE, RIGHT_SAMPLERS, SAMPLER_LABELS,
                                 UI_STEPS, DiffusionService)
from .common import md, show, user_errors
from .run_guard import RunGuard, wire_stop

SCALE = 4                   # display upscaling of the 28x28 digits

INTRO = r"""
### Diffusion models
Destroy a digit with Gaussian noise in 1000 small steps (the **forward process**), then train a
network to undo one step at a time by predicting the noise $\epsilon$. Sampling starts from pure
noise and denoises: **DDPM** takes all 1000 steps, **DDIM** jumps through a few of them with the
same network. Everything below runs live on the CPU with our own denoisers.
"""

EQ_FORWARD = r"""
**Forward process** (Ho et al. 2020, eq. 4), closed form for any $t$:
$$q(x_t\mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t)I\big),\qquad
x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\quad \bar\alpha_t = \prod_{s\le t}(1-\beta_s)$$
*Linear* schedule (the seed's): $\beta_t$ from $10^{-4}$ to $0.02$. *Cosine* (Nichol & Dhariwal 2021,
eq. 17): $\bar\alpha_t = f(t)/f(0)$, $f(t) = \cos^2\!\big(\tfrac{t/T + s}{1+s}\cdot\tfrac{\pi}{2}\big)$ — it
destroys information more evenly, where the linear one is almost pure noise long before $T$.
Signal-to-noise ratio: $\mathrm{SNR}(t) = \bar\alpha_t / (1-\bar\alpha_t)$.
"""

EQ_SAMPLERS = r"""
**Training** (Ho et al. 2020, eq. 14): $\;L = \mathbb E_{x_0, t, \epsilon}\,\|\epsilon - \epsilon_\theta(x_t, t, y)\|^2$.

**Predicted clean image** from any step: $\hat x_0 = \big(x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta\big)/\sqrt{\bar\alpha_t}$.

**DDPM step** (eq. 11): $\;x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta\Big) + \sigma_t z$,
$\sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$.

**DDIM step** (Song et al. 2021, eq. 12), from $t$ to an earlier $s$:
$$x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\epsilon_\theta + \sigma z,\quad
\sigma = \eta\sqrt{\tfrac{1-\bar\alpha_s}{1-\bar\alpha_t}\big(1-\tfrac{\bar\alpha_t}{\bar\alpha_s}\big)}$$
$\eta = 0$: deterministic; $\eta = 1$: like DDPM. Both samplers clip $\hat x_0$ to $[-1, 1]$; DDIM then
re-derives $\epsilon_\theta = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)/\sqrt{1-\bar\alpha_t}$ from the clipped
$\hat x_0$, so both terms of its step agree. With diffusers' default (clipped $\hat x_0$, unclipped
$\epsilon_\theta$), guidance 3 on our U-Net gave the asked digit 11% of the time instead of 100%.

**Classifier-free guidance** (Ho & Salimans 2022): one network, trained with the label dropped 10% of
the time, gives both predictions; with guidance scale $s$
$$\tilde\epsilon = \epsilon_\theta(x_t, \varnothing) + s\,\big(\epsilon_\theta(x_t, y) - \epsilon_\theta(x_t, \varnothing)\big)$$
($s = 1$: plain conditional; both passes run as one batch).
"""


def _stream_image(label: str, elem_id: str | None = None, height: int = 220) -> gr.Image:
    """An output image for streamed digit grids (pixelated, not editable)."""
    return gr.Image(label=label, type="pil", format="png", height=height, interactive=False,
                    elem_classes="pixelated", elem_id=elem_id)


def _img(im, **params: Any):
    return None if im is None else show(im, SCALE, **params)


def _clock(s: float) -> str:
    return "—" if not math.isfinite(s) else (f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min")


def _label_text(label: int) -> str:
    return "no label" if int(label) < 0 else f"digit {int(label)}"


def build(service: DiffusionService) -> None:
    models = service.available()
    md(INTRO, elem_classes="lesson-intro")
    build_forward(service)
    if models:
        guard = gr.State(RunGuard())      # one run at a time per session, across both sampling tabs
        build_compare(service, models, guard)
        build_sample(service, models, guard)
        build_quality(service, models)
    else:
        md("*The denoisers are not trained yet: `python -m playground train diffusion_unet`.*")


# ---- 1. forward process -------------------------------------------------------------------------
def _curve_frames(service: DiffusionService, t: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = service.schedule_curves()
    ab = pd.DataFrame([{"t": r["t"], "value": r["alpha_bar"], "series": r["schedule"]} for r in rows])
    snr = pd.DataFrame([{"t": r["t"], "value": r["log10_snr"], "series": r["schedule"]} for r in rows])
    lo, hi = float(snr["value"].min()), float(snr["value"].max())
    ab = pd.concat([ab, pd.DataFrame([{"t": t, "value": 0.0, "series": "t"}, {"t": t, "value": 1.0, "series": "t"}])])
    snr = pd.concat([snr, pd.DataFrame([{"t": t, "value": lo, "series": "t"}, {"t": t, "value": hi, "series": "t"}])])
    return ab, snr


def _forward_outputs(service: DiffusionService, digit: Any, t: Any, seed: Any) -> tuple[Any, Any, str]:
    r = service.forward_process(digit, t, seed)
    text = (f"Digit **{r['label']}** at **t = {r['t']}** · linear: ᾱ = {r['linear']['alpha_bar']:.4f}, "
            f"SNR = {r['linear']['snr']:.3g} · cosine: ᾱ = {r['cosine']['alpha_bar']:.4f}, "
            f"SNR = {r['cosine']['snr']:.3g}")
    return (show(r["linear"]["x_t"], 6, digit=digit, t=t, seed=seed, schedule="linear"),
            show(r["cosine"]["x_t"], 6, digit=digit, t=t, seed=seed, schedule="cosine"), text)


def build_forward(service: DiffusionService) -> None:
    with gr.Tab("Forward process", id="diff-forward"):
        lin0, cos0, text0 = _forward_outputs(service, 7, 300, 0)
        with gr.Row():
            with gr.Column(scale=1):
                digit = gr.Slider(0, 999, value=7, step=1, label="Test digit #")
                t = gr.Slider(0, 999, value=300, step=1, label="Timestep t", elem_id="diff-t")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Noise seed")
                values = md(text0, elem_id="diff-forward-values")
            with gr.Column(scale=1):
                lin = gr.Image(lin0, label="x_t, linear schedule", type="pil", format="png", height=200,
                               elem_classes="pixelated", interactive=False, elem_id="diff-forward-linear")
                cos = gr.Image(cos0, label="x_t, cosine schedule", type="pil", format="png", height=200,
                               elem_classes="pixelated", interactive=False, elem_id="diff-forward-cosine")
            with gr.Column(scale=2):
                ab0, snr0 = _curve_frames(service, 300)
                ab_plot = gr.LinePlot(ab0, x="t", y="value", color="series", title="ᾱ_t (signal kept)", height=220)
                snr_plot = gr.LinePlot(snr0, x="t", y="value", color="series", title="log₁₀ SNR(t)", height=220)
        md(EQ_FORWARD, elem_classes="equation")

        @user_errors
        def forward_api(digit: float, t: float, seed: float):
            """x_t of test digit ``digit`` at timestep ``t`` under both schedules (same noise)."""
            return _forward_outputs(service, digit, t, seed)

        @user_errors
        def schedule_api(t: float):
            """ᾱ_t and log10 SNR(t) of both schedules, with a marker at ``t``."""
            return _curve_frames(service, int(t))

        gr.on([digit.change, t.change, seed.change], forward_api, [digit, t, seed], [lin, cos, values],
              api_name="forward_process", trigger_mode="always_last", show_progress="hidden")
        t.change(schedule_api, t, [ab_plot, snr_plot], api_name="schedule_plot", trigger_mode="always_last",
                 show_progress="hidden")


# ---- shared sampling controls ----------------------------------------------------------------------
def _controls(models: list[str], n_default: int, n_max: int) -> dict[str, Any]:
    c: dict[str, Any] = {}
    c["model"] = gr.Radio([(DIFFUSION_MODELS[m][1], m) for m in models], value=models[0], label="Denoiser")
    c["label"] = gr.Dropdown([("none (unconditional)", -1)] + [(str(d), d) for d in range(10)], value=3,
                             label="Digit")
    c["guidance_scale"] = gr.Slider(0, MAX_GUIDANCE, value=3.0, step=0.5, label="Guidance scale s")
    c["n"] = gr.Slider(1, n_max, value=n_default, step=1, label="Number of digits")
    c["seed"] = gr.Number(value=0, precision=0, minimum=0, label="Seed")
    return c


def _status(frame: dict[str, Any], label: str) -> str:
    return (f"**{label}** step {frame['step']} / {frame['total']}"
            + (f" · t = {int(frame['t'])}" if frame.get("t") is not None else ""))


# ---- 2. DDPM vs DDIM ------------------------------------------------------------------------------
def build_compare(service: DiffusionService, models: list[str], guard: gr.State) -> None:
    with gr.Tab("DDPM vs DDIM", id="diff-compare"):
        with gr.Row():
            with gr.Column(scale=1):
                c = _controls(models, 4, DDPM_MAX_SAMPLES)
                right = gr.Radio([(SAMPLER_LABELS[s], s) for s in RIGHT_SAMPLERS], value="ddim",
                                 label="Against DDPM")
                steps = gr.Slider(UI_STEPS[0], UI_STEPS[1], value=50, step=1, label="Steps (right sampler)")
                eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η (DDIM: 0 deterministic, 1 ≈ DDPM)")
                with gr.Row():
                    start = gr.Button("Run side by side", variant="primary", elem_id="diff-compare-run")
                    stop = gr.Button("Stop", variant="stop", elem_id="diff-compare-stop")
                stop_note = md("", elem_id="diff-compare-stop-note")
            with gr.Column(scale=3):
                status = md("Press **Run**: both samplers start from the same noise.", elem_id="diff-compare-status")
                with gr.Row():
                    with gr.Column():
                        md("**DDPM** — 1000 steps")
                        with gr.Row():
                            l_xt = _stream_image("x_t", "diff-ddpm-xt")
                            l_x0 = _stream_image("predicted x̂₀", "diff-ddpm-x0")
                    with gr.Column():
                        right_title = md("**DDIM** — 50 steps", elem_id="diff-right-title")
                        with gr.Row():
                            r_xt = _stream_image("x_t", "diff-right-xt")
                            r_x0 = _stream_image("predicted x̂₀", "diff-right-x0")
                with gr.Row():
                    l_traj = _stream_image("DDPM trajectory (x_t at chosen steps, then x₀)", height=200)
                    r_traj = _stream_image("Right sampler's trajectory", height=200)
                timing = md("", elem_id="diff-compare-timing")
        md(EQ_SAMPLERS, elem_classes="equation")

        @user_errors
        def compare_api(right: str, steps: float, eta: float, seed: float, label: float, guidance_scale: float,
                        n: float, model: str, g: RunGuard | None = None):
            """Stream DDPM (1000 steps) and ``right`` (``steps`` steps) from the same noise, side by side."""
            g = g if isinstance(g, RunGuard) else RunGuard()
            with g.run() as should_stop:
                it = service.compare(steps, eta, seed, label, guidance_scale, n, model, right,
                                     should_stop=should_stop)
                params = dict(model=model, seed=seed, label=label, guidance_scale=guidance_scale)
                for item in it:
                    if item["kind"] == "frame":
                        a, b = item["ddpm"], item["right"]
                        text = (f"{_status(a, 'DDPM')} · {_status(b, SAMPLER_LABELS[right])} · "
                                f"elapsed {_clock(item['elapsed'])} · ETA {_clock(item['eta_s'])}")
                        yield (_img(a["x_t"], **params), _img(a["x0"], **params), _img(b["x_t"], **params),
                               _img(b["x0"], **params), text, gr.update(), gr.update(), gr.update())
                    else:
                        a, b = item["ddpm"], item["right"]
                        verb = "Stopped" if item["kind"] == "stopped" else "Done"
                        text = (f"**{verb}** after {_clock(item['seconds'])} · {_label_text(label)}, "
                                f"guidance {guidance_scale:g}")
                        table = (f"| sampler | steps | network passes | wall time of its own steps |\n|---|---|---|---|\n"
                                 f"| DDPM | {a['steps']} / {a['total']} | {a['network_calls']} | {_clock(a['seconds'])} |\n"
                                 f"| {SAMPLER_LABELS[right]} | {b['steps']} / {b['total']} | {b['network_calls']} | "
                                 f"{_clock(b['seconds'])} |")
                        if item["kind"] == "done" and math.isfinite(item.get("speedup", math.nan)):
                            table += f"\n\n{SAMPLER_LABELS[right]} was **{item['speedup']:.0f}×** faster."
                        yield (_img(a["grid"], **params), gr.update(), _img(b["grid"], **params), gr.update(), text,
                               _img(a["trajectory"], **params), _img(b["trajectory"], **params), table)

        outs = [l_xt, l_x0, r_xt, r_x0, status, l_traj, r_traj, timing]
        ins = [right, steps, eta, c["seed"], c["label"], c["guidance_scale"], c["n"], c["model"], guard]
        start.click(compare_api, ins, outs, api_name="denoise_compare", concurrency_limit=2,
                    concurrency_id="diffusion")
        wire_stop(start, stop, guard, stop_note, api_name="denoise_stop")
        right.change(lambda r, k: f"**{SAMPLER_LABELS[r]}** — {int(k)} steps", [right, steps], right_title,
                     api_visibility="private", show_progress="hidden")
        steps.change(lambda r, k: f"**{SAMPLER_LABELS[r]}** — {int(k)} steps", [right, steps], right_title,
                     api_visibility="private", show_progress="hidden")




# ---- 3. one sampler (the /denoise endpoint) -------------------------------------------------------
def build_sample(service: DiffusionService, models: list[str], guard: gr.State) -> None:
    with gr.Tab("Sample", id="diff-sample"):
        with gr.Row():
            with gr.Column(scale=1):
                sampler = gr.Radio([(SAMPLER_LABELS[s], s) for s in SAMPLER_LABELS], value="ddim", label="Sampler")
                steps = gr.Slider(1, 1000, value=50, step=1, label="Steps (DDPM always takes 1000)")
                eta = gr.Slider(0, 1, value=0.0, step=0.05, label="η (DDIM)")
                c = _controls(models, 16, 64)
                with gr.Row():
                    start = gr.Button("Sample", variant="primary", elem_id="diff-sample-run")
                    stop = gr.Button("Stop", variant="stop")
                stop_note = md("")
            with gr.Column(scale=3):
                status = md("", elem_id="diff-sample-status")
                with gr.Row():
                    xt = _stream_image("x_t", "diff-sample-xt", height=260)
                    x0 = _stream_image("predicted x̂₀", "diff-sample-x0", height=260)
                gallery = gr.Gallery(label="Result", columns=8, height=300, format="png", elem_classes="pixelated",
                                     elem_id="diff-sample-gallery")

        @user_errors
        def denoise_api(sampler: str, steps: float, eta: float, seed: float, label: float, guidance_scale: float,
                        n: float, model: str, g: RunGuard | None = None):
            """Stream one sampler's x_t and x̂₀, then the final digits."""
            g = g if isinstance(g, RunGuard) else RunGuard()
            with g.run() as should_stop:
                params = dict(model=model, sampler=sampler, steps=steps, eta=eta, seed=seed, label=label,
                              guidance_scale=guidance_scale)
                for item in service.denoise(sampler, steps, eta, seed, label, guidance_scale, n, model,
                                            should_stop=should_stop):
                    if item["kind"] == "frame":
                        text = (f"{_status(item, SAMPLER_LABELS[sampler])} · elapsed {_clock(item['elapsed'])} · "
                                f"ETA {_clock(item['eta_s'])}")
                        yield _img(item["x_t"], **params), _img(item["x0"], **params), text, gr.update()
                    else:
                        verb = "Stopped" if item["kind"] == "stopped" else "Done"
                        text = (f"**{verb}**: {item['steps']} steps, {item['network_calls']} network passes, "
                                f"{_clock(item['seconds'])}")
                        imgs = [show(im, SCALE, index=i, **params) for i, im in enumerate(item["images"])]
                        yield gr.update(), gr.update(), text, imgs

        ins = [sampler, steps, eta, c["seed"], c["label"], c["guidance_scale"], c["n"], c["model"], guard]
        start.click(denoise_api, ins, [xt, x0, status, gallery], api_name="denoise", concurrency_limit=2,
                    concurrency_id="diffusion")
        wire_stop(start, stop, guard, stop_note, api_visibility="private")


# ---- 4. steps vs quality ----------------------------------------------------------------------------
def build_quality(service: DiffusionService, models: list[str]) -> None:
    with gr.Tab("Steps vs quality", id="diff-quality"):
        rows = []
        for m in models:
            for r in service.quality(m):
                rows.append({"steps": r["steps"], "frechet_distance": r["frechet_distance"],
                             "series": f"{DIFFUSION_MODELS[m][1]} {SAMPLER_LABELS[r['sampler']].split(' (')[0]}, "
                                       f"s = {r['guidance_scale']:g}",
                             "accuracy": r.get("requested_class_accuracy")})
        if not rows:
            md("*Not measured yet: `python -m playground evaluate diffusion_unet`.*")
            return
        frame = pd.DataFrame(rows)
        md("Fréchet distance to the test digits (lower is better; measured offline by "
           "`python -m playground evaluate`, the same noises for every row) against the number of sampling "
           "steps. The DDIM paper's claim: a few dozen DDIM steps come close to 1000 DDPM steps.")
        gr.LinePlot(frame, x="steps", y="frechet_distance", color="series", height=360, title="Steps vs quality")
        gr.Dataframe(frame, label="All rows", interactive=False)
