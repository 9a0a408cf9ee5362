"""The Stable Diffusion lesson (seed §8): text to image on our tiny latent diffusion model, with the
predicted clean image x̂₀ live at every step, classifier-free guidance swept and opened up for one step,
parameters read back from a PNG, and img2img (its own tab, :func:`build_img2img`)."""
from __future__ import annotations

import time
from typing import Any

import gradio as gr

from ..core.errors import UserInputError
from ..core.images import read_params
from ..core.settings import Limits
from ..core.validation import check_image
from ..latent.service import (CFG_SCALES, DEFAULT_SCHEDULER, MAX_GUIDANCE, MAX_IMAGES, MAX_STEPS, SCHEDULERS,
                              Txt2ImgService)
from .common import log, md, model_note, show, user_errors
from .gpu import check_budget, gpu, seconds
from .run_guard import RunGuard, wire_stop

FRAME_SECONDS = 0.1          # at most ten preview frames a second reach the browser
HEARTBEAT_SECONDS = 2.0      # without previews (offloaded models), a status line this often keeps the run alive
EXAMPLES = [
    ["a large red circle", ""],
    ["a small blue square in the top left", ""],
    ["a green triangle above a purple circle on a black background", ""],
    ["a yellow square to the left of an orange triangle", ""],
    ["a small purple circle in the bottom right on a gray background", ""],
    ["a large blue triangle", "red"],
]

INTRO = r"""
### Text to image: a tiny Stable Diffusion
Stable Diffusion runs diffusion not on pixels but in the small **latent space** of an autoencoder, and
steers every denoising step with your **prompt** through cross-attention. Ours is the same
`StableDiffusionPipeline` code at toy size — trained on this CPU on captioned scenes of circles,
squares and triangles (64×64 images, 4×16×16 latents) — so type a caption from that little world.
"""

EQ_LDM = r"""
**Latent diffusion** (Rombach et al. 2022, eq. 2): the autoencoder $z = \mathcal E(x)$ is trained first;
then the U-Net learns to predict the noise in $z_t = \sqrt{\bar\alpha_t}\,z_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$,
given the text encoder's output $\tau_\theta(y)$:
$$L_{LDM} = \mathbb E_{\mathcal E(x),\,y,\,\epsilon\sim\mathcal N(0,I),\,t}\Big[\big\|\epsilon - \epsilon_\theta\big(z_t, t, \tau_\theta(y)\big)\big\|^2\Big]$$

**Cross-attention** (their eq. 1), in every `CrossAttn` block of the U-Net — queries from the image,
keys and values from the words:
$$\mathrm{Attention}(Q,K,V) = \mathrm{softmax}\!\Big(\frac{QK^{\top}}{\sqrt d}\Big)V,\quad
Q = W_Q\,\varphi(z_t),\ K = W_K\,\tau_\theta(y),\ V = W_V\,\tau_\theta(y)$$

**Predicted clean latent** at any step (shown live as x̂₀, decoded by the VAE):
$\hat z_0 = \big(z_t - \sqrt{1-\bar\alpha_t}\,\tilde\epsilon\big)/\sqrt{\bar\alpha_t}$, image $\hat x_0 = \mathcal D(\hat z_0)$.
"""

EQ_CFG = r"""
**Classifier-free guidance** (Ho & Salimans 2022), two passes of the same U-Net per step — one with the
prompt $y$, one with the negative prompt $\varnothing$ (empty by default):
$$\tilde\epsilon = \epsilon_\theta(z_t, \varnothing) + s\,\big(\epsilon_\theta(z_t, y) - \epsilon_\theta(z_t, \varnothing)\big)$$
$s = 1$ is the conditional model alone (the pipeline then skips the unconditional pass); larger $s$
pushes harder along the *guidance direction* $\epsilon_\theta(z_t, y) - \epsilon_\theta(z_t, \varnothing)$ —
more faithful to the prompt, less varied, and past some point over-saturated.
"""

EQ_IMG2IMG = r"""
**img2img** (SDEdit, Meng et al. 2022): encode the picture, $z_0 = \mathcal E(x)$, jump to the noise level
$t_s \approx \text{strength}\cdot T$ in one go with the forward process
$$z_{t_s} = \sqrt{\bar\alpha_{t_s}}\;z_0 + \sqrt{1-\bar\alpha_{t_s}}\;\epsilon,\qquad \epsilon\sim\mathcal N(0, I)$$
and run only the last $\lfloor \text{strength}\cdot\text{steps}\rfloor$ denoising steps with your prompt.
Strength 1 forgets the picture entirely (pure noise); small strengths keep its layout and colours.
"""


def clock(s: float) -> str:
    return "—" if s != s or s == float("inf") else f"{s:.1f} s"


def notices_text(items: list[str]) -> str:
    return "".join(f"\n\n> ⚠ {n}" for n in items)


def diagram(info: dict[str, Any]) -> str:
    """The pipeline with the served model's tensor shapes (read from its configs) beside SD 1.5's."""
    p = info["params"]
    ch = "/".join(str(c) for c in info["unet_channels"])
    c, s, f, img = info["latent_channels"], info["latent_side"], info["vae_factor"], info["image_side"]
    name = "ours (tiny_sd)" if info["builtin"] else f"served: `{info['model']}`"
    return rf"""
**The pipeline**

```
prompt ─▶ tokenizer ─▶ text encoder τθ ───────────▶ K, V
                                                       │ cross-attention
noise z_T ─▶ U-Net εθ(z_t, t, τθ(y)) × steps ─▶ z_0 ─▶ VAE decoder 𝒟 ─▶ image
            (in latent space, with a scheduler)
```

| stage | {name} | SD 1.5 |
|---|---|---|
| tokens | {info['tokens']} ids (vocabulary {info['vocab_size']:,}) | 77 ids (49,408) |
| text embeddings τθ(y) | {info['tokens']} × {info['text_dim']} ({info['text_layers']} layers) | 77 × 768 (12 layers) |
| latent z_t | {c} × {s} × {s} | 4 × 64 × 64 |
| U-Net channels | {ch}, cross-attention dim {info['cross_attention_dim']} | 320/640/1280/1280, dim 768 |
| VAE decoder | ×{f}: 3 × {img} × {img} | ×8: 3 × 512 × 512 |
| parameters | text {p['text_encoder'] / 1e6:.2f} M · U-Net {p['unet'] / 1e6:.2f} M · VAE {p['vae'] / 1e6:.2f} M | 123 M · 860 M · 84 M |
"""


def upload_image(limits: Limits, **kwargs: Any) -> gr.Image:
    """A ``gr.Image`` upload (the file path, untouched: ``image_mode=None`` keeps 16-bit, CMYK, palette and
    PNG text chunks for the service) whose file is checked with the service's own rules
    (:func:`core.validation.check_image`: readable, within the size limits) *before* Gradio decodes it, so
    a corrupt or huge file gets the same clear message as everywhere else instead of Gradio's
    preprocessing trace. (Patched on the instance: a ``gr.Image`` subclass would make Gradio write a
    ``.pyi`` stub next to this module at import.)"""
    comp = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], **kwargs)
    original = comp.preprocess

    def preprocess(payload: Any) -> Any:
        path = getattr(payload, "path", None)
        if path and not str(getattr(payload, "url", "") or "").startswith("data:"):
            try:
                check_image(path, limits)
            except UserInputError as exc:
                raise gr.Error(str(exc)) from None
        return original(payload)

    comp.preprocess = preprocess
    return comp


def display_scale(side: int) -> int:
    """Crisp nearest-neighbour upscaling for display: 64 px pictures are shown 3× (a Hub model's not at all).
    Always from the size of what is shown, since the served model can change (a configured one that loads
    later, or falls back)."""
    return max(1, 192 // max(1, int(side)))


def loading_diagram(service: Txt2ImgService) -> str:
    """The diagram of the served pipeline, or what is happening while it loads."""
    try:
        info = service.pipeline_info()
    except UserInputError as exc:
        return f"*{exc}*"
    if info is None:
        return "*The pipeline's shapes appear here once the model has loaded.*"
    return diagram(info)


def result_image(label: str, elem_id: str, height: int = 220) -> gr.Image:
    """A read-only picture output, shown pixelated (the results of img2img, inpainting and ControlNet)."""
    return gr.Image(label=label, type="pil", format="png", height=height, interactive=False,
                    elem_classes="pixelated", elem_id=elem_id)


def _gallery(images: list, captions: list[str] | None = None) -> list:
    return [(im, captions[i] if captions else None) for i, im in enumerate(images)]




def sampling_controls(guidance_scale: float = 7.5) -> tuple[gr.Slider, gr.Slider, gr.Dropdown, gr.Number]:
    """Steps, guidance scale (starting at ``guidance_scale``), scheduler and seed: the controls the
    text-to-image family of tabs shares."""
    with gr.Row():
        steps = gr.Slider(1, MAX_STEPS, value=25, step=1, label="Steps")
        guidance = gr.Slider(1, MAX_GUIDANCE, value=guidance_scale, step=0.5, label="Guidance scale s")
    with gr.Row():
        scheduler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Scheduler")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
    return steps, guidance, scheduler, seed


def build(service: Txt2ImgService) -> tuple[gr.State, dict[str, Any]] | None:
    """The "Text to image" tab. Returns the state holding the last generated image (for img2img) and the
    pipeline's shapes, or None when there is no model to serve."""
    md(INTRO, elem_classes="lesson-intro")
    configured = bool(service.settings.txt2img_model)          # loads in the background: no info yet
    try:
        info = service.pipeline_info() if service.available() else None
    except UserInputError:
        info = None
    except Exception:  # noqa: BLE001 - a broken checkpoint must not take the other tabs down
        log.exception("text-to-image model failed to load")
        md("> ⚠ The text-to-image model could not be loaded (see the server log).")
        info = None
    if info is None and not configured:
        md("*The text-to-image model is not trained yet: `python -m playground train tiny_sd`.*",
           elem_id="txt2img-missing")
        return None
    diagram_md = md(diagram(info) if info else loading_diagram(service), elem_id="txt2img-diagram", render=False)
    model_note(service, "txt2img-model-note", [(diagram_md, lambda: loading_diagram(service))])
    guard = gr.State(RunGuard())
    last = gr.State(None)
    settings = service.settings
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(value="a large red circle", label="Prompt", lines=2, elem_id="txt2img-prompt")
            negative = gr.Textbox(value="", label="Negative prompt (what to steer away from)", lines=1)
            steps, guidance, scheduler, seed = sampling_controls()
            n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="txt2img-run")
                stop = gr.Button("Stop", variant="stop", elem_id="txt2img-stop")
            stop_note = md("", elem_id="txt2img-stop-note")
        with gr.Column(scale=3):
            status = md("Press **Generate**: watch the predicted clean image x̂₀ sharpen step by step.",
                        elem_id="txt2img-status")
            preview = gr.Image(label="x̂₀ at this step (decoded)", type="pil", format="png", height=180,
                               interactive=False, elem_classes="pixelated", elem_id="txt2img-preview")
            gallery = gr.Gallery(label="Result", columns=4, height=240, format="png", object_fit="contain",
                                 elem_classes="pixelated", elem_id="txt2img-gallery")
    with gr.Row():
        with gr.Column(scale=1):
            diagram_md.render()
        with gr.Column(scale=1):
            md(EQ_LDM, elem_classes="equation")
    gr.Examples(EXAMPLES, [prompt, negative], label="Captions from the scenes' grammar (click one)")

    with gr.Accordion("Read the parameters back from a PNG made here", open=False):
        with gr.Row():
            png = upload_image(service.limits, height=200, label="Drop a picture generated on this page",
                               elem_id="txt2img-png")
            with gr.Column():
                png_message = md("", elem_id="txt2img-png-message")
                png_params = gr.JSON(label="Parameters found", visible=True)

    with gr.Accordion("Classifier-free guidance, made visible", open=True):
        md(EQ_CFG, elem_classes="equation")
        with gr.Row():
            sweep = gr.Button(f"Sweep s = {', '.join(f'{s:g}' for s in CFG_SCALES)} (same seed)",
                              elem_id="txt2img-sweep")
        sweep_status = md("", elem_id="txt2img-sweep-status")
        sweep_gallery = gr.Gallery(label="Same noise, growing guidance", columns=len(CFG_SCALES), height=220,
                                   format="png", object_fit="contain", elem_classes="pixelated",
                                   elem_id="txt2img-sweep-gallery")
        md("**One step, opened up.** Follow the guided run to one step (DDIM, the guidance scale above) and "
           "look at its three noise predictions — each shown as its 4 latent channels, mid-gray = 0 — and the "
           "clean image each of them implies.")
        with gr.Row():
            step_index = gr.Slider(0, MAX_STEPS - 1, value=10, step=1, label="Step (0 = the noisiest)")
            step_btn = gr.Button("Show this step", elem_id="txt2img-step-run")
        step_text = md("", elem_id="txt2img-step-text")
        with gr.Row():
            def small(label: str, elem_id: str | None = None) -> gr.Image:
                return gr.Image(label=label, type="pil", format="png", height=150, interactive=False,
                                elem_classes="pixelated", elem_id=elem_id)
            x_t_img = small("z_t (decoded)")
            eps_u, eps_c = small("ε(z_t, ∅)", "txt2img-eps-uncond"), small("ε(z_t, y)", "txt2img-eps-cond")
            eps_d, eps_g = small("direction ε_y − ε_∅"), small("guided ε̃", "txt2img-eps-guided")
        with gr.Row():
            x0_u, x0_c, x0_g = small("x̂₀ from ε_∅"), small("x̂₀ from ε_y"), small("x̂₀ from ε̃")

    # ---- handlers --------------------------------------------------------------------------------
    # The functions under @gpu run the networks (in a ZeroGPU worker process on ZeroGPU: ui/gpu.py); the
    # handlers around them answer "Loading …" without asking for a GPU and keep the session's run guard.
    @gpu(lambda prompt, negative_prompt, steps, guidance_scale, seed, scheduler, n, stop:
         seconds(settings, steps, n, family=service.served_family()))
    @user_errors
    def txt2img_frames(prompt: str, negative_prompt: str, steps: float, guidance_scale: float, seed: float,
                       scheduler: str, n: float, stop: Any):
        """The run's frames: (status, x̂₀ preview, gallery, last image), streamed."""
        preview_seconds = FRAME_SECONDS if service.serves_builtin() else None
        last_frame = 0.0
        for item in service.txt2img(prompt, negative_prompt, steps, guidance_scale, seed, scheduler, n,
                                    should_stop=stop, preview_seconds=preview_seconds):
            scale = display_scale(item["size"])
            notes = notices_text(item["notices"])
            if item["kind"] == "step":
                now = time.perf_counter()
                last_step = item["step"] == item["total"]
                if item["preview"] is None and now - last_frame < HEARTBEAT_SECONDS and not last_step:
                    continue                    # no picture: a status line now and then (the run's heartbeat)
                if item["preview"] is not None and now - last_frame < FRAME_SECONDS and not last_step:
                    continue
                last_frame = now
                text = (f"step {item['step']} / {item['total']} · t = {int(item['t'])} · elapsed "
                        f"{clock(item['elapsed'])} · ETA {clock(item['eta_s'])}{notes}")
                frame = (show(item["preview"], scale, kind="preview", step=item["step"], prompt=prompt)
                         if item["preview"] is not None else gr.update())
                yield text, frame, gr.update(), gr.update()
            elif item["kind"] == "done":
                text = (f"**Done**: {item['steps']} steps of {item['scheduler']}, {len(item['images'])} image(s) "
                        f"in {clock(item['seconds'])} (x̂₀ previews: {clock(item['preview_decode_seconds'])})"
                        f"{notes}")
                caps = [f"seed {seed + i:g}" for i in range(len(item["images"]))]
                yield text, gr.update(), _gallery(item["images"], caps), item["images"][0]
            else:
                text = f"**Stopped** after step {item['step']} / {item['total']}: showing its x̂₀.{notes}"
                yield text, gr.update(), _gallery(item["images"]), gr.update()

    @user_errors
    def txt2img_api(prompt: str, negative_prompt: str, steps: float, guidance_scale: float, seed: float,
                    scheduler: str, n: float, g: RunGuard | None = None):
        """Stream text to image: status, the live x̂₀ preview, then the gallery of results."""
        service.require_ready()
        check_budget(settings, steps, n, family=service.served_family())
        g = g if isinstance(g, RunGuard) else RunGuard()
        with g.run() as should_stop:
            frames = txt2img_frames(prompt, negative_prompt, steps, guidance_scale, seed, scheduler, n, g.flag)
            try:
                for out in frames:
                    should_stop()                     # the heartbeat; a Stop reaches the run through its flag
                    yield out
            finally:
                frames.close()

    @user_errors
    def read_png_params(image: str | None):
        """Parameters stored in a PNG made here: a message and the restored fields."""
        if image is None:
            return "", None
        r = service.read_png_params(image)
        return r["message"], r["params"]

    def fill(params: dict | None):
        if not params:
            return [gr.update()] * 7
        keys = ("prompt", "negative_prompt", "steps", "guidance_scale", "seed", "scheduler")
        return [gr.update(value=params[k]) if k in params else gr.update() for k in keys] + [gr.update(value=1)]

    @gpu(lambda prompt, negative_prompt, steps, seed, scheduler:
         seconds(settings, steps, runs=len(CFG_SCALES), family=service.served_family()))
    @user_errors
    def cfg_sweep_gpu(prompt: str, negative_prompt: str, steps: float, seed: float, scheduler: str):
        r = service.cfg_sweep(prompt, negative_prompt, steps, seed, scheduler)
        caps = [f"s = {s:g}" for s in r["scales"]]
        return _gallery(r["images"], caps), f"{len(caps)} runs in {clock(r['seconds'])}{notices_text(r['notices'])}"

    @user_errors
    def cfg_sweep(prompt: str, negative_prompt: str, steps: float, seed: float, scheduler: str):
        """The same seed at guidance scales 1, 2, 4, 7.5, 12, side by side."""
        service.require_ready()
        check_budget(settings, steps, runs=len(CFG_SCALES), family=service.served_family())
        return cfg_sweep_gpu(prompt, negative_prompt, steps, seed, scheduler)

    @gpu(lambda prompt, negative_prompt, steps, seed, step_index, guidance_scale:
         seconds(settings, steps, family=service.served_family()))
    @user_errors
    def cfg_step_gpu(prompt: str, negative_prompt: str, steps: float, seed: float, step_index: float,
                     guidance_scale: float):
        r = service.cfg_step_view(prompt, negative_prompt, steps, seed, step_index, guidance_scale)
        scale = display_scale(r["x_t"].width)
        nr = r["norms"]
        text = (f"Step {r['step']} of {r['steps']} · t = {r['t']} · ᾱ_t = {r['alpha_bar']:.3f} · s = "
                f"{r['guidance_scale']:g} · ‖ε_∅‖ = {nr['uncond']:.2f}, ‖ε_y‖ = {nr['cond']:.2f}, "
                f"‖ε_y − ε_∅‖ = {nr['direction']:.3f}, ‖ε̃‖ = {nr['guided']:.2f}{notices_text(r['notices'])}")
        tag = dict(kind="cfg_step", step=r["step"], seed=seed, guidance_scale=r["guidance_scale"])

        def s(im: Any, part: str) -> Any:
            return show(im, 1 if part.startswith("eps") or part == "direction" else scale, part=part, **tag)
        return (text, s(r["x_t"], "x_t"), s(r["eps"]["uncond"], "eps_uncond"), s(r["eps"]["cond"], "eps_cond"),
                s(r["direction"], "direction"), s(r["eps"]["guided"], "eps_guided"), s(r["x0"]["uncond"], "x0_uncond"),
                s(r["x0"]["cond"], "x0_cond"), s(r["x0"]["guided"], "x0_guided"))

    @user_errors
    def cfg_step(prompt: str, negative_prompt: str, steps: float, seed: float, step_index: float,
                 guidance_scale: float):
        """One DDIM step of CFG: the three noise predictions (and the direction) and the x̂₀ of each."""
        service.require_ready()
        return cfg_step_gpu(prompt, negative_prompt, steps, seed, step_index, guidance_scale)

    ins = [prompt, negative, steps, guidance, seed, scheduler, n, guard]
    run.click(txt2img_api, ins, [status, preview, gallery, last], api_name="txt2img", concurrency_limit=2,
              concurrency_id="txt2img")
    wire_stop(run, stop, guard, stop_note, api_name="txt2img_stop")
    png.change(read_png_params, png, [png_message, png_params], api_name="read_png_params").success(
        fill, png_params, [prompt, negative, steps, guidance, seed, scheduler, n], api_visibility="private")
    sweep.click(cfg_sweep, [prompt, negative, steps, seed, scheduler], [sweep_gallery, sweep_status],
                api_name="cfg_sweep", concurrency_limit=2, concurrency_id="txt2img")
    gr.on([step_btn.click, step_index.release], cfg_step, [prompt, negative, steps, seed, step_index, guidance],
          [step_text, x_t_img, eps_u, eps_c, eps_d, eps_g, x0_u, x0_c, x0_g], api_name="cfg_step",
          trigger_mode="always_last", concurrency_limit=2, concurrency_id="txt2img")
    return last, info


def build_img2img(service: Txt2ImgService, built: tuple[gr.State, dict[str, Any]] | None) -> None:
    """The "img2img" tab: a picture plus a prompt, from the noised starting point to the result."""
    md("### Image to image\nStart from your picture instead of pure noise: noise it part of the way, then "
       "denoise with a prompt. The strength says how far back to go.", elem_classes="lesson-intro")
    if built is None:
        md("*The text-to-image model is not trained yet: `python -m playground train tiny_sd`.*",
           elem_id="img2img-missing")
        return
    last, _ = built
    settings = service.settings
    model_note(service, "img2img-model-note")
    with gr.Row():
        with gr.Column(scale=2):
            image = upload_image(service.limits, height=220, label="Your picture (any size; used at the model's size)",
                                 elem_id="img2img-input")
            use_last = gr.Button("Use the last generated image", elem_id="img2img-use-last")
            prompt = gr.Textbox(value="a large blue circle", label="Prompt", lines=2, elem_id="img2img-prompt")
            negative = gr.Textbox(value="", label="Negative prompt")
            strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength (how much noise is added)")
            steps, guidance, scheduler, seed = sampling_controls()
            run = gr.Button("Run img2img", variant="primary", elem_id="img2img-run")
        with gr.Column(scale=3):
            status = md("", elem_id="img2img-status")
            with gr.Row():
                used = result_image("Input at the model's size", "img2img-used")
                start = result_image("Noised starting point z_{t_s} (decoded)", "img2img-start")
                result = result_image("Result", "img2img-result")
            md(EQ_IMG2IMG, elem_classes="equation")

    @gpu(lambda image, prompt, strength, steps, *rest: seconds(settings, steps, family=service.served_family()))
    @user_errors
    def img2img_gpu(image: str | None, prompt: str, strength: float, steps: float, guidance_scale: float,
                    seed: float, scheduler: str, negative_prompt: str = ""):
        r = service.img2img(image, prompt, strength, steps, guidance_scale, seed, scheduler, negative_prompt)
        scale = display_scale(r["input"].width)
        text = (f"**Done** in {clock(r['seconds'])}: noised to t_s = {r['t_start']} (ᾱ = {r['alpha_bar']:.3f}), "
                f"then {r['steps_run']} of {int(steps)} steps.{notices_text(r['notices'])}")
        tag = dict(kind="img2img", seed=seed, strength=strength)
        return (text, show(r["input"], scale, part="input", **tag), show(r["start"], scale, part="start", **tag),
                show(r["result"], scale, **(read_params(r["result"]) or {})))

    @user_errors
    def img2img_api(image: str | None, prompt: str, strength: float, steps: float, guidance_scale: float,
                    seed: float, scheduler: str, negative_prompt: str = ""):
        """img2img: the image used, the noised starting point, the result."""
        service.require_ready()
        return img2img_gpu(image, prompt, strength, steps, guidance_scale, seed, scheduler, negative_prompt)

    def take_last(im: Any):
        if im is None:
            raise gr.Error("Nothing generated yet in this session: run the Text to image tab first.")
        return im

    run.click(img2img_api, [image, prompt, strength, steps, guidance, seed, scheduler, negative],
              [status, used, start, result], api_name="img2img", concurrency_limit=2, concurrency_id="txt2img")
    use_last.click(take_last, last, image, api_visibility="private")
