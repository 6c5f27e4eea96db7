"""Plots render to PNG without a display; summaries are computed from the values."""

from __future__ import annotations

import numpy as np

from gategru.plotting import format_summary, gate_summary, plot_gates


def random_gates(rng, samples=2, time=40, units=6):
    sig = 1 / (1 + np.exp(-rng.normal(scale=3, size=(3, samples, time, units))))
    return {"update": sig[0], "reset": sig[1], "candidate": np.tanh(rng.normal(size=sig[2].shape))}


def test_plot_writes_png(rng, tmp_path):
    gates = random_gates(rng)
    inputs = rng.normal(size=(2, 40, 3))
    path = tmp_path / "g.png"
    fig = plot_gates(gates, inputs=inputs, sample=1, path=path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert len(fig.axes) >= 4  # an input panel and three heatmaps (plus colorbars)


def test_summary_values(rng):
    gates = random_gates(rng)
    summary = gate_summary(gates)
    z = gates["update"]
    assert summary["update"]["mean"] == np.float64(z.mean()).item() or np.isclose(
        summary["update"]["mean"], z.mean())
    assert np.isclose(summary["update"]["low"], (z < 0.05).mean())
    assert np.isclose(summary["candidate"]["saturated"],
                      (np.abs(gates["candidate"]) > 0.95).mean())
    assert "update" in format_summary(summary)
