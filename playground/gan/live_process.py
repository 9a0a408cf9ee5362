"""Runs a playing :class:`~playground.gan.live.LiveGAN` in its own process.

Why a process: the live trainer's steps are tiny matrix products whose cost is mostly Python
overhead, so a training *thread* shares the GIL with the web server, and on a 2-core host it
reached only 120-200 steps/s at under 5 pictures/s. In its own process (one intra-op thread) the
run trains at full speed and draws its own pictures; the server only forwards the newest one.

Life of a run: the :class:`LiveGAN` lives in the server while paused (Step, Reset and the picture
work on it directly). :meth:`LiveRunner.play` ships it (pickled: networks, optimisers and RNG
state; plain pickle, not torch's shared-memory tensors) to a worker forked from a preloaded fork server; the worker alternates ``FRAME_SECONDS``
of training with one rendered picture and sends each picture with its statistics through a
queue. On pause, when the run's step/time budget is spent, when its loss diverges, or when nobody
has asked for a picture for ``ABANDONED_SECONDS`` (the browser tab was closed), the worker sends
the trained LiveGAN back and exits. At most ``max_workers`` runs play at once (the others are
told to wait), so the host's cores are shared among a bounded number of learners.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import pickle
import queue
import threading
import time
from typing import Any

from ..core.errors import UserInputError
from ..core.settings import get_settings

FRAME_SECONDS = 0.15        # training time between two pictures (+ ~15 ms to draw: ~6 pictures/s)
ABANDONED_SECONDS = 20.0    # no picture requested for this long: the learner has gone, stop
BACKLOG = 4                 # pictures waiting in the queue beyond this are dropped (not drawn)
LOSS_POINTS = 200

_ctx = mp.get_context("forkserver")
# "__main__": the server imports the main script once, so workers do not re-run it (spawn semantics)
_ctx.set_forkserver_preload(["__main__", "playground.gan.live_warm"])
_slots_lock = threading.Lock()
_active: set[int] = set()


def max_workers() -> int:
    """How many live runs may play at once (``Settings.live_workers``)."""
    return get_settings().live_workers


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _worker(state: bytes, arrows: str, size: int, out: Any, control: Any, last_seen: Any,
            abandon_after: float) -> None:
    """The worker's loop (runs in the child process)."""
    import torch

    from ..core.errors import UserInputError as _Err

    torch.set_num_threads(1)
    gan = pickle.loads(state)
    error = None
    reason = "paused"
    while True:
        if control.poll():
            msg = control.recv()
            if msg[0] == "pause":
                break
            if msg[0] == "arrows":
                arrows = msg[1]
        if time.time() - last_seen.value > abandon_after:
            reason = "abandoned"
            break
        try:
            info = gan.step(10_000, time_limit=FRAME_SECONDS)
        except _Err as exc:
            error, reason = str(exc), "diverged"
            break
        if out.qsize() < BACKLOG:
            out.put(("frame", _png(gan.render(size, arrows)), info, gan.losses(max_points=LOSS_POINTS),
                     gan.modes_covered()))
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

    ``info`` is the newest step report, ``error`` a divergence message; :meth:`latest` gives the
    newest picture (PNG bytes) while playing. Deep copies share the object (``gr.State``).
    """

    def __init__(self, gan: Any) -> None:
        self.gan = gan
        self.info: dict[str, Any] = gan.step(0)
        self.error: str | None = None
        self.stopped: str = ""
        self.png: bytes | None = None
        self.loss_rows: list[dict[str, Any]] | None = None
        self.modes: tuple[int, int] | None = None
        self._proc: Any = None
        self._out: Any = None
        self._control: Any = None
        self._seen: Any = None
        self._lock = threading.RLock()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def play(self, arrows: str, size: int, abandon_after: float = ABANDONED_SECONDS) -> None:
        """Start training in a worker process (no-op if already playing or the budget is spent);
        it stops by itself when :meth:`latest` has not been called for ``abandon_after`` seconds."""
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
                                          args=(pickle.dumps(self.gan), arrows, size, self._out, theirs, self._seen,
                                                abandon_after))
                self._proc.start()
                _active.add(id(self))
            self.error, self.stopped, self.png = None, "", None

    def set_arrows(self, arrows: str) -> None:
        with self._lock:
            if self.running:
                self._control.send(("arrows", arrows))

    def latest(self, wait: float = 0.0) -> bytes | None:
        """Collect the worker's messages; return the newest picture (None if none yet)."""
        with self._lock:
            if not self.running:
                return self.png
            self._seen.value = time.time()
            deadline = time.perf_counter() + wait
            while True:
                try:
                    msg = self._out.get(timeout=max(0.0, deadline - time.perf_counter())) if wait else \
                        self._out.get_nowait()
                except queue.Empty:
                    break
                if msg[0] == "frame":
                    self.png, self.info, self.loss_rows, self.modes = msg[1], msg[2], msg[3], msg[4]
                    wait = 0.0
                else:
                    self._finish(msg)
                    break
            return self.png

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
                else:
                    self.png, self.info, self.loss_rows, self.modes = msg[1], msg[2], msg[3], msg[4]

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
        self.png, self.loss_rows, self.modes = None, None, None

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
