"""Ratios of two benchmark variants taken round by round (no TensorFlow, no side effects).

On a shared machine the speed drifts over seconds: a ratio of two overall medians can
compare one variant's fast minutes with another's slow ones. Every round of cpu_bench.py
times every variant within seconds, so per-round ratios compare like with like."""

from __future__ import annotations

import statistics


def paired_ratio(num: list[float], den: list[float]) -> dict | None:
    """Median over rounds of (num's median / den's median in that round), and the range."""
    ratios = [a / b for a, b in zip(num, den, strict=False) if a > 0 and b > 0]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "rounds": len(ratios)}
