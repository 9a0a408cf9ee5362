"""ZeroGPU: the handlers that run the text-to-image family's networks, under ``@spaces.GPU``.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` set by Hugging Face) the main process has no GPU: ``spaces.GPU`` lends one
for each call of a decorated function, which then runs in a forked worker process that receives its arguments
and sends back its return value — or, for a generator, each value it yields — pickled. So:

- the decorated function is the one that yields the stream's frames (the pipeline's thread and queue live
  inside it, in the worker), and takes only picklable arguments: no ``gr.State`` holding locks; a run's stop
  request crosses the process boundary as a file (:class:`.run_guard.StopFlag`);
- models must be loaded before the first call (the main process checks that first and answers "Loading …"
  without asking for a GPU);
- ``duration`` (seconds of GPU asked for) grows with the work: :func:`seconds` of steps × images.

Off ZeroGPU, ``spaces.GPU`` returns the function unchanged: the CPU app and a classic GPU Space run exactly
the same code. The digit models (VAE, GAN, diffusion tabs) stay on the CPU on ZeroGPU (:mod:`core.device`): they
are fast there, and a GPU per slider drag would only queue visitors.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import spaces

from ..core.presets import PRESETS
from ..core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

BASE_SECONDS = 10.0                  # worker start-up and weight transfer, asked for on top of the steps
DEFAULT_SECONDS_PER_STEP = 0.1       # per step and image with CFG, when no preset says (a 1024 px SDXL: 0.15)
MAX_SECONDS = 120.0                  # ZeroGPU refuses longer requests from visitors without a plan


def seconds(settings: Settings, steps: Any, images: Any = 1, runs: int = 1) -> float:
    """The GPU time to ask for: start-up plus per-step time × steps × images × runs (bounded; the
    arguments are not validated yet here, so anything unusable counts as 1)."""
    def num(x: Any) -> float:
        try:
            return min(max(float(x), 1.0), 100.0)
        except (TypeError, ValueError):
            return 1.0
    preset = PRESETS.get(settings.preset)
    per_step = preset.seconds_per_step if preset else DEFAULT_SECONDS_PER_STEP
    return min(MAX_SECONDS, BASE_SECONDS + per_step * num(steps) * num(images) * runs)


def gpu(duration: Callable[..., float]) -> Callable[[F], F]:
    """``spaces.GPU(duration=duration)``: ``duration`` is called with the decorated function's arguments."""
    return spaces.GPU(duration=duration)
