"""Latency summaries for the benchmarks (``python -m playground bench``)."""
from __future__ import annotations

import statistics


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summary(xs_s: list[float]) -> dict[str, float]:
    """Durations in seconds as milliseconds: p50, p90, mean and the count."""
    ms = [x * 1000 for x in xs_s]
    return {"p50_ms": round(statistics.median(ms), 3), "p90_ms": round(_pct(ms, 0.9), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}
