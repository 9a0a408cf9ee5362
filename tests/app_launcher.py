"""Start the real ``app.py`` in a subprocess on a free port for API and browser tests (one place for it:
``tests/conftest.py``'s session app and the modules that serve their own checkpoints use it)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(log: Path, checkpoints: Path | None = None, timeout: float = 180.0,
               env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """``app.py`` listening on 127.0.0.1 (``PLAYGROUND_CHECKPOINTS=checkpoints`` when given, plus the extra
    variables ``env``); returns its URL once ``/gradio_api/info`` answers, and the process. Output goes to
    ``log``."""
    import httpx

    port = free_port()
    extra = dict(env or {})
    env = dict(os.environ, PLAYGROUND_PORT=str(port), PLAYGROUND_HOST="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
    if checkpoints is not None:
        env["PLAYGROUND_CHECKPOINTS"] = str(checkpoints)
    env.update(extra)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early:\n{log.read_text()}")
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app did not start in time:\n{log.read_text()}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def checkpoints_with_tiny_sd(root: Path) -> Path:
    """The shipped checkpoints (symlinked into ``root``) plus a random tiny_sd pipeline when the real one
    is not there yet."""
    from playground.latent.components import random_pipeline

    for item in (ROOT / "checkpoints").iterdir():
        os.symlink(item, root / item.name)
    if not (root / "tiny_sd" / "model_index.json").exists():
        if (root / "tiny_sd").is_symlink():
            (root / "tiny_sd").unlink()
        random_pipeline(root / "tiny_sd", preset="test", seed=0)
    _random_addons(root)
    return root


def _random_addons(root: Path) -> None:
    """Random stand-ins for the models fine-tuned from tiny_sd, when they are not trained yet: a 9-channel
    inpainting pipeline (tiny "test" parts) and a ControlNet made from the served base's U-Net (its zero
    convolutions make it a no-op until trained, which is all the API tests need of it)."""
    from playground.latent.components import build_components, get_config, load_pipeline
    from playground.latent.controlnet import make_controlnet
    from playground.latent.inpaint import make_inpaint_unet
    from playground.latent.inpaint_train import inpaint_pipeline

    if not (root / "tiny_sd_inpaint" / "model_index.json").exists():
        if (root / "tiny_sd_inpaint").is_symlink():
            (root / "tiny_sd_inpaint").unlink()
        parts = build_components(get_config("test"), seed=1)
        inpaint_pipeline(parts, make_inpaint_unet(parts["unet"])).save_pretrained(root / "tiny_sd_inpaint",
                                                                                   safe_serialization=True)
    if not (root / "tiny_sd_controlnet" / "config.json").exists():
        if (root / "tiny_sd_controlnet").is_symlink():
            (root / "tiny_sd_controlnet").unlink()
        make_controlnet(load_pipeline(root / "tiny_sd").unet).save_pretrained(root / "tiny_sd_controlnet",
                                                                               safe_serialization=True)
