"""Per-unit gate statistics accumulated chunk by chunk, so a long run can be screened
without storing its gates."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gategru.plotting import GATE_NAMES, SATURATION


def _count(flags: np.ndarray) -> np.ndarray:
    """True values per column: summing bytes is ~3x faster than count_nonzero(axis=0)."""
    return flags.view(np.uint8).sum(axis=0, dtype=np.int64)


class _Moments:
    """Count, mean and centred sum of squares per unit, merged exactly (Chan et al.)."""

    def __init__(self, units: int) -> None:
        self.count = 0
        self.mean = np.zeros(units)
        self.m2 = np.zeros(units)
        self.low = np.zeros(units, np.int64)
        self.high = np.zeros(units, np.int64)

    def add(self, values: np.ndarray, low_below: float, high_above: float) -> None:
        n = values.shape[0]
        if n == 0:
            return
        # float64 sums: float32 ones drift over millions of steps
        chunk_mean = values.sum(axis=0, dtype=np.float64) / n
        centred = values - chunk_mean.astype(values.dtype)
        offset = chunk_mean - chunk_mean.astype(values.dtype).astype(np.float64)
        # sum((v - m)^2) from values centred on m rounded to the values' dtype
        chunk_m2 = np.einsum("ij,ij->j", centred, centred, dtype=np.float64) - n * offset**2
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += chunk_m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.low += _count(values < low_below)
        self.high += _count(values > high_above)

    def merge(self, other: _Moments) -> None:
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * (other.count / total)
        self.m2 += other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total
        self.low += other.low
        self.high += other.high


class GateStats:
    """Running per-unit statistics of the three gates of one GRU layer.

    Feed it gate chunks ``{"update", "reset", "candidate"}`` of shape
    (samples, timesteps, units) with :meth:`update` (or merge two with :meth:`merge`);
    read the result with :meth:`per_unit` (arrays over units) or :meth:`summary` (one
    number per gate, the same keys as :func:`gategru.plotting.gate_summary`).

    Saturation, with ``s = saturation`` (default 0.05): for the update and reset gates
    (sigmoids) ``low`` is the fraction of steps with a value below ``s`` and ``high``
    above ``1 - s``; for the candidate (a tanh), ``low`` is below ``-1 + s`` and ``high``
    above ``1 - s``. ``saturated = low + high``. Masked steps (given with ``mask``) are
    left out of everything; means and variances are accumulated in float64.
    """

    def __init__(self, saturation: float = SATURATION) -> None:
        if not 0.0 < saturation < 0.5:
            raise ValueError(f"saturation must be in (0, 0.5), got {saturation}")
        self.saturation = float(saturation)
        self._moments: dict[str, _Moments] = {}
        self.units: int | None = None

    @classmethod
    def from_gates(
        cls,
        gates: Mapping[str, object],
        mask: object = None,
        saturation: float = SATURATION,
    ) -> GateStats:
        stats = cls(saturation)
        stats.update(gates, mask)
        return stats

    def _bounds(self, name: str) -> tuple[float, float]:
        s = self.saturation
        return (-1.0 + s if name == "candidate" else s), 1.0 - s

    def update(self, gates: Mapping[str, object], mask: object = None) -> None:
        """Adds a chunk: gates (..., units), mask (...) bool or None (all steps count)."""
        keep = None if mask is None else np.asarray(mask, bool).reshape(-1)
        for name in GATE_NAMES:
            values = np.asarray(gates[name])
            if values.dtype not in (np.float32, np.float64):
                values = values.astype(np.float32)  # float16 sums lose too much
            units = values.shape[-1]
            if self.units is None:
                self.units = units
                self._moments = {n: _Moments(units) for n in GATE_NAMES}
            elif units != self.units:
                raise ValueError(f"gates have {units} units, the statistics {self.units}")
            values = values.reshape(-1, units)
            if keep is not None:
                if keep.size != values.shape[0]:
                    raise ValueError(
                        f"mask has {keep.size} steps, gates[{name!r}] {values.shape[0]}"
                    )
                values = values[keep]
            self._moments[name].add(values, *self._bounds(name))

    def merge(self, other: GateStats) -> GateStats:
        """Adds ``other``'s steps to this one (same units and saturation); returns self."""
        if other.units is None:
            return self
        if self.units is None:
            self.units = other.units
            self._moments = {n: _Moments(other.units) for n in GATE_NAMES}
        if other.units != self.units or other.saturation != self.saturation:
            raise ValueError("can only merge statistics with the same units and saturation")
        for name in GATE_NAMES:
            self._moments[name].merge(other._moments[name])
        return self

    @property
    def count(self) -> int:
        """Steps counted per unit (samples × unmasked timesteps)."""
        return self._moments["update"].count if self._moments else 0

    def per_unit(self) -> dict[str, dict[str, np.ndarray]]:
        """``{gate: {"mean", "std", "low", "high", "saturated"}}``, each (units,) float64;
        NaN before any step was counted."""
        if self.units is None:
            raise ValueError("no gates were added yet")
        result = {}
        for name, m in self._moments.items():
            n = m.count if m.count else np.nan
            low, high = m.low / n, m.high / n
            result[name] = {
                "mean": m.mean.copy() if m.count else np.full(self.units, np.nan),
                "std": np.sqrt(m.m2 / n),
                "low": low,
                "high": high,
                "saturated": low + high,
            }
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        """Over all units: ``mean``, ``std``, and ``low``/``high`` (update, reset) or
        ``saturated`` (candidate), as plain floats: the same table as ``gate_summary``."""
        if self.units is None:
            raise ValueError("no gates were added yet")
        result = {}
        for name, m in self._moments.items():
            n = m.count * self.units
            if n == 0:
                result[name] = {"mean": float("nan"), "std": float("nan")}
                continue
            mean = float(m.mean.mean())  # every unit has the same count
            spread = m.m2.sum() + m.count * ((m.mean - mean) ** 2).sum()
            stats = {"mean": mean, "std": float(np.sqrt(spread / n))}
            if name == "candidate":
                stats["saturated"] = float((m.low.sum() + m.high.sum()) / n)
            else:
                stats["low"] = float(m.low.sum() / n)
                stats["high"] = float(m.high.sum() / n)
            result[name] = stats
        return result

    def __repr__(self) -> str:
        return f"GateStats(units={self.units}, count={self.count})"
