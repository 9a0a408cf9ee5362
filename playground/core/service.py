"""What every model family's service shares: the settings, the process-wide load-once registry, the
device the models live on, and the user-facing limits."""
from __future__ import annotations

import torch

from .device import best_device
from .registry import REGISTRY, ModelRegistry
from .settings import Settings, get_settings


class Service:
    """Base of the VAE, GAN and diffusion services (no gradio, no model code here)."""

    # On ZeroGPU only the families whose handlers run under ``@spaces.GPU`` (ui/gpu.py) put their models on
    # the GPU; the small digit models stay on the CPU, where they are fast (a GPU slot per slider drag would
    # queue visitors for nothing).
    uses_zero_gpu = False

    def __init__(self, settings: Settings | None = None, registry: ModelRegistry = REGISTRY) -> None:
        self.settings = settings or get_settings()
        self.registry = registry
        on_cpu = self.settings.zero_gpu and not self.uses_zero_gpu
        self.device = torch.device("cpu") if on_cpu else best_device(self.settings.device)
        self.limits = self.settings.limits

    def _present(self, folders: dict[str, str], filename: str) -> list[str]:
        """The names whose ``checkpoints/<folder>/<filename>`` exists, in the given order."""
        root = self.settings.checkpoints_dir
        return [name for name, folder in folders.items() if (root / folder / filename).exists()]
