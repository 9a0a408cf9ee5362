"""ZeroGPU: the handlers that run the text-to-image family's networks, under ``@spaces.GPU``.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` set by Hugging Face) the main process has no GPU: ``spaces.GPU`` lends one
for each call of a decorated function, which then runs in a forked worker process that receives its arguments
and sends back its return value — or, for a generator, each value it yields — pickled. So:

- the decorated function is the one that yields the stream's frames (the pipeline's thread and queue live
  inside it, in the worker), and takes only picklable arguments: no ``gr.State`` holding locks; a run's stop
  request crosses the process boundary as a file (:class:`.run_guard.StopFlag`);
- models must be loaded before the first call (the main process checks that first and answers "Loading …"
  without asking for a GPU), so the worker, a fork, starts with all of them and with no load lock held;
- models load in background threads, and ``spaces``' CUDA emulation is per thread: each loading thread enters
  it first (:func:`thread_init`);
- ``duration`` (seconds of GPU asked for) grows with the work: :func:`seconds` of steps × images; a request
  beyond the longest duration ZeroGPU grants is refused up front (:func:`check_budget`).

Off ZeroGPU, ``spaces.GPU`` returns the function unchanged: the CPU app and a classic GPU Space run exactly
the same code. The digit models (VAE, GAN, diffusion tabs) stay on the CPU on ZeroGPU (:mod:`core.device`): they
are fast there, and a GPU per slider drag would only queue visitors.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import spaces

from ..core.errors import UserInputError
from ..core.presets import PRESETS
from ..core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

BASE_SECONDS = 10.0                  # worker start-up and weight transfer, asked for on top of the steps
DEFAULT_SECONDS_PER_STEP = 0.1       # per step and image with CFG, when no preset says (a 1024 px SDXL: 0.15)
MAX_SECONDS = 120.0                  # ZeroGPU refuses longer requests from visitors without a plan


def _num(x: Any) -> float:
    """A count from a request not validated yet (anything unusable counts as 1)."""
    try:
        return min(max(float(x), 1.0), 100.0)
    except (TypeError, ValueError):
        return 1.0


def _estimate(settings: Settings, family: str, steps: Any, images: Any, runs: int) -> float:
    preset = PRESETS.get(settings.preset)
    per_step = preset.seconds_per_step if preset else DEFAULT_SECONDS_PER_STEP
    if family == "sdxl":                       # an SDXL model whatever the preset says
        per_step = max(per_step, PRESETS["sdxl"].seconds_per_step)
    return BASE_SECONDS + per_step * _num(steps) * _num(images) * runs


def seconds(settings: Settings, steps: Any, images: Any = 1, runs: int = 1, family: str = "sd") -> float:
    """The GPU time to ask for: start-up plus per-step time (the preset's, at least SDXL's for an SDXL
    model) × steps × images × runs, at most :data:`MAX_SECONDS`."""
    return min(MAX_SECONDS, _estimate(settings, family, steps, images, runs))


def check_budget(settings: Settings, steps: Any, images: Any = 1, runs: int = 1, family: str = "sd") -> None:
    """On ZeroGPU, refuse a request that would need more GPU time than one call may have (it would be cut
    off mid-run); elsewhere nothing to check."""
    if settings.zero_gpu and _estimate(settings, family, steps, images, runs) > MAX_SECONDS:
        raise UserInputError(f"That is more work than one GPU call may take on this Space ({MAX_SECONDS:.0f} s): "
                             "use fewer steps or fewer images.")


def gpu(duration: Callable[..., float]) -> Callable[[F], F]:
    """``spaces.GPU(duration=duration)``: ``duration`` is called with the decorated function's arguments."""
    return spaces.GPU(duration=duration)


def thread_init() -> None:
    """Call first in a thread that loads models: on ZeroGPU it enters ``spaces``' CUDA emulation, which is
    per thread (without it, moving a model to "cuda" there fails); elsewhere nothing."""
    from spaces.config import Config

    if Config.zero_gpu:
        from spaces.zero.torch import enter_mode

        enter_mode()
