"""plot_saturation renders to PNG without a display, and draws the statistics it is given."""

from __future__ import annotations

import numpy as np
import pytest

from gategru import GateStats, plot_saturation


def random_gates(rng, samples=2, time=60, units=9):
    pre = rng.normal(scale=3.0, size=(3, samples, time, units)) + rng.normal(size=units)
    sig = 1.0 / (1.0 + np.exp(-pre[:2]))
    return {"update": sig[0], "reset": sig[1], "candidate": np.tanh(pre[2])}


def test_from_gates_and_from_stats(rng, tmp_path):
    gates = random_gates(rng)
    mask = rng.random(gates["update"].shape[:2]) > 0.2
    stats = GateStats.from_gates(gates, mask)
    path = tmp_path / "sat.png"

    fig = plot_saturation(stats, path=path)
    same = plot_saturation(gates, mask=mask)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_unit = stats.per_unit()
    for figure in (fig, same):
        panels = [ax for ax in figure.axes if ax.get_ylabel() == "fraction of steps"]
        assert len(panels) == 3
        for ax, name in zip(panels, ("update", "reset", "candidate"), strict=True):
            bars = ax.patches  # the low bars, then the high bars stacked on them
            units = per_unit[name]["low"].size
            low = np.array([bar.get_height() for bar in bars[:units]])
            high = np.array([bar.get_height() for bar in bars[units:]])
            np.testing.assert_allclose(low, per_unit[name]["low"])
            np.testing.assert_allclose(high, per_unit[name]["high"])


def test_rejects_other_things(rng):
    with pytest.raises(TypeError, match="GateStats"):
        plot_saturation(rng.normal(size=(2, 3, 4)))
    with pytest.raises(KeyError, match="missing"):
        plot_saturation({"update": rng.normal(size=(1, 3, 2))})
