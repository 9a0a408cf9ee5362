"""The live trainer's worker process: trains, draws, pauses with its state intact, and stops by itself."""
from __future__ import annotations

import time

import pytest
import torch

from playground.core.errors import UserInputError
from playground.gan import live, live_process
from playground.gan.live_process import LiveRunner


def _runner(**kw) -> LiveRunner:
    cfg = live.LiveConfig(dataset="ring", loss="wgan-gp", **live.RECOMMENDED["wgan-gp"]).validate()
    return LiveRunner(live.LiveGAN(live.replace(cfg, **kw) if kw else cfg))


def _wait_for_step(r: LiveRunner, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while r.running and r.info["step"] < at_least and time.time() < deadline:
        r.refresh(0.2)
    assert r.info["step"] >= at_least or not r.running


def test_play_trains_in_a_worker_and_pause_brings_the_state_back():
    r = _runner()
    r.play()
    assert r.running
    before = [p.clone() for p in r.gan.G.parameters()]
    _wait_for_step(r, 60)
    assert r.gan.step_count == r.info["step"] >= 60                 # the server's copy follows the worker
    assert any(not torch.equal(a, b) for a, b in zip(before, r.gan.G.parameters()))
    assert r.loss_rows and r.gan.render(96).size == (96, 96)
    r.pause()
    assert not r.running and r.error is None and r.stopped == "paused"
    n = r.gan.step_count
    assert n >= 60 and r.info["step"] == n
    assert len(r.gan.losses()) >= n // live.LOG_EVERY - 1     # the history came back with the networks
    r.gan.step(5)                                               # the returned run keeps training in process
    assert r.gan.step_count == n + 5
    r.play()                                         # and can be played again from there
    _wait_for_step(r, n + 20)
    r.pause()
    assert r.gan.step_count >= n + 20


def test_budget_end_returns_the_finished_run():
    r = _runner(max_steps=40)
    r.play()
    deadline = time.time() + 30
    while r.running and time.time() < deadline:
        r.refresh(0.2)
    assert not r.running and r.gan.done and r.gan.step_count == 40 and r.stopped == "done"


def test_divergence_in_the_worker_is_reported():
    r = _runner()
    with torch.no_grad():
        r.gan.G[-1].bias.fill_(float("nan"))      # what an absurd learning rate would do eventually
    r.play()
    deadline = time.time() + 30
    while r.running and time.time() < deadline:
        r.refresh(0.2)
    assert not r.running and r.stopped == "diverged"
    assert r.error is not None and "diverged" in r.error


def test_a_run_nobody_watches_stops_by_itself():
    r = _runner()
    r.play(abandon_after=0.5)
    time.sleep(2.0)                      # nobody calls refresh() meanwhile
    deadline = time.time() + 10
    while r.running and time.time() < deadline:
        r.refresh(0.2)                   # (the queue may still hold snapshots sent before it stopped)
    assert not r.running and r.stopped == "abandoned" and r.gan.step_count > 0


def test_at_most_max_workers_runs_play_at_once(monkeypatch):
    monkeypatch.setattr(live_process, "max_workers", lambda: 1)
    a, b = _runner(), _runner()
    a.play()
    try:
        with pytest.raises(UserInputError, match="busy"):
            b.play()
    finally:
        a.pause()
    b.play()                                          # the slot is free again
    b.pause()
    assert not b.running
