"""One sampling run at a time per browser session, with a Stop button: shared by the tabs that stream
(diffusion, text to image). Kept in ``gr.State``; each session gets its own guard."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core.errors import UserInputError

STALE_SECONDS = 20.0        # a run that has not stepped for this long no longer blocks its session


class RunGuard:
    """One run at a time per browser session, and a stop flag for it. A run that has not stepped
    for ``STALE_SECONDS`` (its client vanished) no longer blocks a new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.run_id = 0
        self.active = False
        self.heartbeat = 0.0
        self.stop_requested = False

    def begin(self) -> int:
        with self._lock:
            if self.active and time.monotonic() - self.heartbeat < STALE_SECONDS:
                raise UserInputError("A run is already going in this tab: press Stop (or wait for it) first.")
            self.run_id += 1
            self.active, self.stop_requested, self.heartbeat = True, False, time.monotonic()
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
            if run_id == self.run_id:
                self.active = False

    def stop(self) -> bool:
        with self._lock:
            self.stop_requested = True
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
