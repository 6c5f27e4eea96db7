"""How cpu_bench.py times a variant: a loop of calls, and the Bench record it fills."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

try:
    from tensorflow.python.eager.context import async_wait as _tf_async_wait
except ImportError:  # private API; eager is synchronous without it

    def _tf_async_wait() -> None:
        pass


def tf_sync() -> None:
    # TF's eager executor is synchronous by default, so a call returns with its outputs computed;
    # async_wait also covers an async executor. (.numpy() on every output would add a copy of
    # the gates to every timing.)
    _tf_async_wait()


def timed_loop(call: Callable[[], object], sync: Callable[[], None] = tf_sync) -> Callable:
    def run(repeats: int) -> list[float]:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = call()
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
            del out
        return times

    return run


@dataclass
class Bench:
    """One (variant, mode) at one shape: run(k) returns k wall times in ms."""

    variant: str
    mode: str
    run: Callable[[int], list[float]]
    outputs: Callable[[], dict[str, np.ndarray]] | None = None  # forward results, for checks
    memory: dict[str, float | None] = field(default_factory=dict)  # see measure_memory()
    rounds: list[list[float]] = field(default_factory=list)  # wall times in ms, by round

    @property
    def times(self) -> list[float]:
        return [t for r in self.rounds for t in r]
