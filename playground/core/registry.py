"""Load each model once, keep it resident on the device, share it between all requests.

``REGISTRY.get(key, loader)`` runs ``loader()`` the first time ``key`` is asked for and returns the
cached object afterwards without taking any lock. Loads run one at a time, under one re-entrant lock
(a loader may ask for another model): concurrent first requests load a model exactly once, and two
different models never load at the same time — transformers / accelerate build models under a
process-wide "empty weights" patch of ``torch.nn.Module``, so two threads loading at once handed each
other meta tensors (seen: the start-up warm-ups of three pipelines).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ModelRegistry:
    """A thread-safe, load-once cache of models (or any expensive object) by key."""

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}
        self._load_lock = threading.RLock()
        self.load_counts: dict[str, int] = {}

    def get(self, key: str, loader: Callable[[], T]) -> T:
        obj = self._objects.get(key)
        if obj is not None:
            return obj
        with self._load_lock:
            obj = self._objects.get(key)
            if obj is None:
                obj = loader()
                self.load_counts[key] = self.load_counts.get(key, 0) + 1
                self._objects[key] = obj
        return obj

    def __contains__(self, key: str) -> bool:
        return key in self._objects

    def keys(self) -> list[str]:
        return list(self._objects)

    def clear(self) -> None:
        with self._load_lock:
            self._objects.clear()
            self.load_counts.clear()


REGISTRY = ModelRegistry()
