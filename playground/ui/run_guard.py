"""One sampling run at a time per browser session, with a Stop button: shared by the tabs that stream
(diffusion, text to image). Kept in ``gr.State``; each session gets its own guard."""
from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core.errors import UserInputError

STALE_SECONDS = 20.0        # a run that has not stepped for this long no longer blocks its session


class StopFlag:
    """A run's stop request as a file: picklable and seen across processes, so a run executing in a ZeroGPU
    worker process (ui/gpu.py) stops when the Stop button is pressed in the main one. Calling it answers
    "stop now?" (the services' ``should_stop``)."""

    def __init__(self) -> None:
        self.path = os.path.join(tempfile.gettempdir(), f"playground-stop-{uuid.uuid4().hex}")

    def __call__(self) -> bool:
        return os.path.exists(self.path)

    def set(self) -> None:
        with open(self.path, "w"):
            pass

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class RunGuard:
    """One run at a time per browser session, and a stop flag for it. A run that has not stepped
    for ``STALE_SECONDS`` (its client vanished) no longer blocks a new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.run_id = 0
        self.active = False
        self.heartbeat = 0.0
        self.stop_requested = False
        self.flag: StopFlag | None = None       # the current run's stop file
        self._flags: dict[int, StopFlag] = {}   # every run's, until it ends (a stale run may outlive its turn)

    def begin(self) -> int:
        with self._lock:
            if self.active and time.monotonic() - self.heartbeat < STALE_SECONDS:
                raise UserInputError("A run is already going in this tab: press Stop (or wait for it) first.")
            self.run_id += 1
            self.active, self.stop_requested, self.heartbeat = True, False, time.monotonic()
            if self.flag is not None:
                self.flag.set()                  # a stale run still going somewhere: stop it
            self.flag = self._flags[self.run_id] = StopFlag()
            return self.run_id

    def should_stop(self, run_id: int) -> bool:
        """Called before every step: also the heartbeat."""
        with self._lock:
            if run_id != self.run_id:
                return True
            self.heartbeat = time.monotonic()
            return self.stop_requested

    @contextmanager
    def run(self) -> Iterator[Callable[[], bool]]:
        """``with guard.run() as should_stop:`` claims the session's one run (or raises a user
        error) and hands the sampler its stop check; the run is released however it ends."""
        run_id = self.begin()
        try:
            yield lambda: self.should_stop(run_id)
        finally:
            self.end(run_id)

    def end(self, run_id: int) -> None:
        with self._lock:
            flag = self._flags.pop(run_id, None)
            if flag is not None:
                flag.clear()
            if run_id == self.run_id:
                self.active = False
                self.flag = None

    def stop(self) -> bool:
        with self._lock:
            self.stop_requested = True
            if self.flag is not None:
                self.flag.set()
            return self.active

    def __deepcopy__(self, memo: dict[int, Any]) -> "RunGuard":   # each session gets its own guard
        return RunGuard()


def stop_run(g: RunGuard | None) -> str:
    """The Stop button: ask the session's run to stop; the note to show beside the button."""
    if isinstance(g, RunGuard) and g.stop():
        return "**Stop requested**: the run ends after its current step."
    return "Nothing is running."


def wire_stop(start: Any, stop: Any, guard: Any, note: Any, **click_kwargs: Any) -> None:
    """Wire a tab's Stop button to ``stop_run``. Its answer goes to ``note``, its own line beside the
    button, never to the run's status line: the run's last message ("Stopped …") owns that, and two
    events writing one component can arrive in either order, which once left "Stopping…" showing after
    the run had stopped. Starting a run clears the note."""
    start.click(lambda: "", None, note, api_visibility="private", show_progress="hidden", queue=False)
    stop.click(stop_run, guard, note, show_progress="hidden", **click_kwargs)
