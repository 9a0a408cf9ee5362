"""Runs a playing :class:`~playground.gan.live.LiveGAN` in its own process.

Why a process: the live trainer's steps are tiny matrix products whose cost is mostly Python
overhead, so a training *thread* shares the GIL with the web server, and on a 2-core host it
reached only 120-200 steps/s at under 5 pictures/s. In its own process (one intra-op thread) the
run trains at full speed on one core while the server draws the pictures on the other.

Life of a run: the :class:`LiveGAN` lives in the server while paused (Step, Reset and the picture
work on it directly). :meth:`LiveRunner.play` ships it (pickled: networks, optimisers and RNG
state; plain pickle, not torch's shared-memory tensors) to a worker forked from a preloaded fork
server. The worker trains in slices of ``FRAME_SECONDS`` and after each sends a snapshot (both
networks' weights — a few KB —, the step report, the thinned loss history) through a queue;
:meth:`LiveRunner.refresh` loads the newest snapshot into the server's copy, which the timer then
draws. On pause, when the run's step/time budget is spent, when its loss diverges, or when nobody
has looked for ``ABANDONED_SECONDS`` (the browser tab was closed), the worker sends the whole
trained LiveGAN back and exits. At most ``max_workers`` runs play at once (the others are told to
wait), so the host's cores are shared among a bounded number of learners.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import threading
import time
from typing import Any

from ..core.errors import UserInputError
from ..core.settings import get_settings

FRAME_SECONDS = 0.1         # training time between two snapshots sent to the server
ABANDONED_SECONDS = 20.0    # no picture requested for this long: the learner has gone, stop
BACKLOG = 4                 # snapshots waiting in the queue beyond this are not sent
LOSS_POINTS = 200

_ctx = mp.get_context("forkserver")
# "__main__": the server imports the main script once, so workers do not re-run it (spawn semantics)
_ctx.set_forkserver_preload(["__main__", "playground.gan.live_warm"])
_slots_lock = threading.Lock()
_active: set[int] = set()


def max_workers() -> int:
    """How many live runs may play at once (``Settings.live_workers``)."""
    return get_settings().live_workers


def _worker(state: bytes, out: Any, control: Any, last_seen: Any, abandon_after: float) -> None:
    """The worker's loop (runs in the child process): train for ``FRAME_SECONDS``, send a snapshot
    (both networks' weights, the step report, the thinned loss history), repeat."""
    import torch

    from ..core.errors import UserInputError as _Err

    torch.set_num_threads(1)
    gan = pickle.loads(state)
    error = None
    reason = "paused"
    while True:
        if control.poll() and control.recv()[0] == "pause":
            break
        if time.time() - last_seen.value > abandon_after:
            reason = "abandoned"
            break
        try:
            info = gan.step(10_000, time_limit=FRAME_SECONDS)
        except _Err as exc:
            error, reason = str(exc), "diverged"
            break
        if out.qsize() < BACKLOG:
            weights = pickle.dumps((gan.G.state_dict(), gan.D.state_dict()))
            out.put(("snapshot", weights, info, gan.losses(max_points=LOSS_POINTS)))
        if gan.done:
            reason = "done"
            break
    out.put(("final", pickle.dumps(gan), error, reason))


def warm_up() -> None:
    """Start the fork server (it imports torch once) so that the first Play is quick."""
    p = _ctx.Process(target=time.sleep, args=(0,), daemon=True)
    p.start()
    p.join()


class LiveRunner:
    """One browser session's live run: the paused :class:`LiveGAN`, or the worker training it.

    ``info`` is the newest step report, ``error`` a divergence message, ``loss_rows`` the worker's
    thinned loss history while playing; :meth:`refresh` brings the paused copy up to date with the
    worker's newest weights. Deep copies share the object (``gr.State``).
    """

    def __init__(self, gan: Any) -> None:
        self.gan = gan
        self.info: dict[str, Any] = gan.step(0)
        self.error: str | None = None
        self.stopped: str = ""
        self.loss_rows: list[dict[str, Any]] | None = None
        self._proc: Any = None
        self._out: Any = None
        self._control: Any = None
        self._seen: Any = None
        self._lock = threading.RLock()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def play(self, abandon_after: float = ABANDONED_SECONDS) -> None:
        """Start training in a worker process (no-op if already playing or the budget is spent);
        it stops by itself when :meth:`refresh` has not been called for ``abandon_after`` seconds."""
        with self._lock:
            if self.running or self.gan.done:
                return
            with _slots_lock:
                if len(_active) >= max_workers():
                    raise UserInputError(f"All {max_workers()} live trainers are busy right now; press Play "
                                         "again in a few seconds (Step still works).")
                self._out, (mine, theirs) = _ctx.Queue(), _ctx.Pipe()
                self._control = mine
                self._seen = _ctx.Value("d", time.time(), lock=False)
                self._proc = _ctx.Process(target=_worker, name="live-gan", daemon=True,
                                          args=(pickle.dumps(self.gan), self._out, theirs, self._seen,
                                                abandon_after))
                self._proc.start()
                _active.add(id(self))
            self.error, self.stopped, self.loss_rows = None, "", None

    def refresh(self, wait: float = 0.0) -> bool:
        """Apply the worker's newest snapshot to this runner's :class:`LiveGAN` (so that it can be
        drawn here, on the server's own core) and take the run back if the worker has finished.
        Waits up to ``wait`` seconds for a snapshot when none is queued. True if anything changed."""
        with self._lock:
            if not self.running:
                return False
            self._seen.value = time.time()
            deadline = time.perf_counter() + wait
            newest = None
            while True:
                try:
                    msg = (self._out.get(timeout=max(0.0, deadline - time.perf_counter())) if wait and newest is None
                           else self._out.get_nowait())
                except queue.Empty:
                    break
                if msg[0] == "snapshot":
                    newest = msg
                else:
                    self._finish(msg)
                    return True
            if newest is None:
                return False
            self._apply(newest)
            return True

    def _apply(self, msg: tuple) -> None:
        _, weights, info, rows = msg
        g_state, d_state = pickle.loads(weights)
        with self.gan._lock:
            self.gan.G.load_state_dict(g_state)
            self.gan.D.load_state_dict(d_state)
            self.gan.step_count, self.gan.compute_seconds = info["step"], info["seconds"]
        self.info, self.loss_rows = info, rows

    def pause(self, timeout: float = 10.0) -> None:
        """Stop the worker and take the trained LiveGAN back (waits for it, at most ``timeout`` s)."""
        with self._lock:
            if not self.running:
                return
            try:
                self._control.send(("pause",))
            except (BrokenPipeError, OSError):
                pass
            deadline = time.perf_counter() + timeout
            while self.running:
                try:
                    msg = self._out.get(timeout=max(0.01, deadline - time.perf_counter()))
                except queue.Empty:
                    self._kill("the live trainer did not stop in time; its last steps were lost")
                    return
                if msg[0] == "final":
                    self._finish(msg)

    def _finish(self, msg: tuple) -> None:
        _, state, error, reason = msg
        gan = pickle.loads(state)
        self.gan, self.error, self.stopped = gan, error, reason
        self.info = gan.step(0) if error is None else self.info
        self._proc.join(timeout=5)
        self._close()

    def _kill(self, why: str) -> None:
        self._proc.kill()
        self._proc.join(timeout=5)
        self.error = why
        self._close()

    def _close(self) -> None:
        self._out.close()
        self._control.close()
        self._proc = self._out = self._control = self._seen = None
        with _slots_lock:
            _active.discard(id(self))
        self.loss_rows = None

    def __deepcopy__(self, memo: dict[int, Any]) -> "LiveRunner":   # a process cannot be copied: share it
        return self

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            try:
                proc.kill()
            except Exception:   # interpreter shutdown
                pass
            with _slots_lock:
                _active.discard(id(self))
