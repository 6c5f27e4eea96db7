"""A progress bar for long captures: tqdm when it is installed, else a line on stderr.

gategru does not depend on tqdm. ``progress=None`` means "automatic": the bar appears only
once the work has run for a second, so short calls stay silent.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

# Work shorter than this never shows a bar in automatic mode.
AUTO_DELAY_S = 1.0
# Redraw at most this often: a bar must not slow the work it reports on.
REFRESH_S = 0.25


class Progress:
    """``with Progress(total, unit, enabled) as bar: bar.update(n)``.

    Args:
      total: the amount of work (None when unknown: then only a count and rate are shown).
      unit: what is counted ("samples", "steps").
      enabled: True always shows the bar, False never, None after ``AUTO_DELAY_S``.
      description: a short label in front of the bar.
      stream: where the text bar goes (default: stderr).
    """

    def __init__(
        self,
        total: int | None,
        unit: str,
        enabled: bool | None = None,
        description: str = "gategru",
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.description = description
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False
        self._drawn_count = 0
        self._tqdm = None
        if enabled is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(
                    total=total,
                    unit=f" {unit}",
                    desc=description,
                    delay=0.0 if enabled else AUTO_DELAY_S,
                    unit_scale=True,
                    leave=True,
                )

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, amount: int) -> None:
        self.count += amount
        if self._tqdm is not None:
            self._tqdm.update(amount)
            return
        if self.enabled is False:
            return
        now = time.perf_counter()
        finished = self.total is not None and self.count >= self.total
        slow = now - self._start >= AUTO_DELAY_S
        if self.enabled is None and not self._drawn and (finished or not slow):
            return  # automatic: only work that is slow and not yet done earns a bar
        if finished or now - self._last_draw >= REFRESH_S:
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.count / elapsed
        if self.total:
            fraction = min(self.count / self.total, 1.0)
            filled = int(round(30 * fraction))
            remaining = (self.total - self.count) / rate if rate > 0 else float("inf")
            text = (
                f"{self.description} [{'#' * filled}{'.' * (30 - filled)}] "
                f"{self.count:,}/{self.total:,} {self.unit} {100 * fraction:5.1f}% "
                f"{_rate(rate)} {self.unit}/s, {_duration(elapsed)} elapsed, "
                f"{_duration(remaining)} left"
            )
        else:
            text = (
                f"{self.description} {self.count:,} {self.unit} {_rate(rate)} {self.unit}/s, "
                f"{_duration(elapsed)} elapsed"
            )
        self.stream.write("\r" + text)
        self.stream.flush()
        self._last_draw = now
        self._drawn = True
        self._drawn_count = self.count

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
            return
        if self._drawn:
            if self._drawn_count != self.count:
                self._draw(time.perf_counter())  # the final count
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _rate(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.1f}"


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
