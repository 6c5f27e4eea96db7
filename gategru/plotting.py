"""Pictures and numbers for a GRU's gates: heatmaps over time and a saturation summary.

matplotlib is optional (``pip install matplotlib``, or the ``plot`` extra) and is imported
only when a figure is drawn. Figures are built on ``matplotlib.figure.Figure`` with an Agg
canvas, so drawing needs no display and never touches pyplot's global state or backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GATE_NAMES = ("update", "reset", "candidate")

# Gate values closer than this to a bound count as saturated.
SATURATION = 0.05
# Fraction of a saturation panel's height above its data, for the legend.
_LEGEND_ROOM = 0.3

_PANELS = {
    # name: (title, colormap, vmin, vmax); z and r are sigmoids, h̃ is a tanh.
    "update": ("update gate $z$", "viridis", 0.0, 1.0),
    "reset": ("reset gate $r$", "viridis", 0.0, 1.0),
    "candidate": (r"candidate $\tilde{h}$", "RdBu_r", -1.0, 1.0),
}


def _to_numpy(value: object) -> np.ndarray:
    # tf tensors, Keras tensors and numpy arrays all convert through __array__.
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def _check_gates(gates: Mapping[str, object]) -> dict[str, np.ndarray]:
    missing = [name for name in GATE_NAMES if name not in gates]
    if missing:
        raise KeyError(f"gates is missing {missing}; expected keys {list(GATE_NAMES)}")
    arrays = {name: _to_numpy(gates[name]) for name in GATE_NAMES}
    for name, array in arrays.items():
        if array.ndim != 3:
            raise ValueError(
                f"gates[{name!r}] must have shape (samples, timesteps, units), got {array.shape}"
            )
    return arrays


def plot_gates(
    gates: Mapping[str, object],
    inputs: object = None,
    sample: int = 0,
    units: Sequence[int] | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Draws one sample's update, reset and candidate gates as time × unit heatmaps.

    Args:
      gates: ``{"update", "reset", "candidate"}``, arrays or tensors of shape
        (samples, timesteps, units), e.g. from ``GateGRU(return_gates=True)``.
      inputs: optional (samples, timesteps, features) inputs, drawn as lines above.
      sample: which sample to draw.
      units: indices of the units to draw (default: all).
      path: where to save a PNG (dpi 120); nothing is saved when None.
      title: the figure's title.

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plot_gates needs matplotlib: pip install matplotlib (or gategru[plot])"
        ) from err

    arrays = _check_gates(gates)
    samples, timesteps, n_units = arrays["update"].shape
    if not -samples <= sample < samples:
        raise IndexError(f"sample {sample} is out of range for {samples} samples")
    unit_index = np.arange(n_units) if units is None else np.asarray(units, dtype=int)
    if unit_index.ndim != 1 or unit_index.size == 0:
        raise ValueError("units must be a non-empty sequence of unit indices")
    if unit_index.min() < -n_units or unit_index.max() >= n_units:
        raise IndexError(f"units {unit_index.tolist()} out of range for {n_units} units")

    x = None
    if inputs is not None:
        x = _to_numpy(inputs)
        if x.ndim == 2:  # (timesteps, features) for a single sample
            x = x[None]
            x_sample = 0
        else:
            x_sample = sample
        if x.ndim != 3 or x.shape[1] != timesteps:
            raise ValueError(
                f"inputs must have shape (samples, {timesteps}, features), got {x.shape}"
            )

    n_rows = len(GATE_NAMES) + (x is not None)
    # Heatmaps get more height as units grow, but stay on one screen.
    heat_height = float(np.clip(0.06 * unit_index.size + 1.2, 1.6, 3.2))
    heights = ([1.4] if x is not None else []) + [heat_height] * len(GATE_NAMES)
    fig = Figure(figsize=(10.0, sum(heights) + 1.0), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; makes savefig work without pyplot
    axes = fig.subplots(
        n_rows, 2, sharex="col", gridspec_kw={"height_ratios": heights, "width_ratios": [40, 1]}
    )

    row = 0
    if x is not None:
        ax = axes[0, 0]
        steps = np.arange(timesteps)
        for feature in range(x.shape[2]):
            ax.plot(steps, x[x_sample, :, feature], linewidth=1.0, label=f"input {feature}")
        ax.set_ylabel("input")
        ax.set_title("inputs")
        if x.shape[2] <= 8:  # a legend for many features hides the signal
            ax.legend(loc="upper right", fontsize="small", ncols=min(x.shape[2], 4))
        ax.margins(x=0)
        axes[0, 1].axis("off")  # inputs need no colorbar
        row = 1

    # Edges at half steps so cell t is centred on timestep t, lining up with the lines above.
    t_edges = np.arange(timesteps + 1) - 0.5
    u_edges = np.arange(unit_index.size + 1) - 0.5
    for name in GATE_NAMES:
        label, cmap, vmin, vmax = _PANELS[name]
        ax, cax = axes[row, 0], axes[row, 1]
        image = arrays[name][sample][:, unit_index].T  # (units, timesteps)
        mesh = ax.pcolormesh(t_edges, u_edges, image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_ylabel("unit")
        ax.set_title(label)
        ax.set_xlim(t_edges[0], t_edges[-1])
        if units is not None:
            # Label rows with the selected units' own indices, not their positions.
            ticks = np.linspace(0, unit_index.size - 1, min(unit_index.size, 8)).astype(int)
            ax.set_yticks(ticks, [str(u) for u in unit_index[ticks]])
        fig.colorbar(mesh, cax=cax)
        row += 1
    axes[-1, 0].set_xlabel("timestep")
    fig.suptitle(title if title is not None else f"GRU gates, sample {sample}")

    if path is not None:
        fig.savefig(os.fspath(path), dpi=120, format="png")
    return fig


def plot_saturation(
    stats_or_gates: object,
    path: str | os.PathLike | None = None,
    title: str | None = None,
    mask: object = None,
) -> Figure:
    """Per unit, how often each gate sits at its bounds: one panel per gate, one stacked
    bar per unit (fraction of steps near the low bound, near the high bound), with the
    unit's mean gate value as a dot (right axis).

    Args:
      stats_or_gates: a :class:`gategru.stats.GateStats` (e.g. from
        ``capture_to_file``), or gates ``{"update", "reset", "candidate"}`` of shape
        (samples, timesteps, units) as ``capture`` returns them.
      path: where to save a PNG (dpi 120); nothing is saved when None.
      title: the figure's title.
      mask: with gates, (samples, timesteps) bool: the steps that count (default all).

    Returns:
      The ``matplotlib.figure.Figure``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plot_saturation needs matplotlib: pip install matplotlib (or gategru[plot])"
        ) from err
    from gategru.stats import GateStats

    if isinstance(stats_or_gates, GateStats):
        stats = stats_or_gates
    elif isinstance(stats_or_gates, Mapping):
        stats = GateStats.from_gates(_check_gates(stats_or_gates), mask)
    else:
        raise TypeError(
            "plot_saturation takes a GateStats or a gates dict, got "
            f"{type(stats_or_gates).__name__}"
        )
    per_unit = stats.per_unit()
    n_units = stats.units or 0
    s = stats.saturation
    bounds = {
        # name: (label, low text, high text, mean axis range)
        "update": ("update gate $z$", f"z < {s:g}", f"z > {1 - s:g}", (0.0, 1.0)),
        "reset": ("reset gate $r$", f"r < {s:g}", f"r > {1 - s:g}", (0.0, 1.0)),
        "candidate": (
            r"candidate $\tilde{h}$",
            rf"$\tilde{{h}}$ < {-1 + s:g}",
            rf"$\tilde{{h}}$ > {1 - s:g}",
            (-1.0, 1.0),
        ),
    }

    fig = Figure(figsize=(10.0, 7.5), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; makes savefig work without pyplot
    axes = fig.subplots(len(GATE_NAMES), 1, sharex=True)
    units = np.arange(n_units)
    width = 0.8 if n_units <= 64 else 1.0  # many units: bars touch, no gaps to alias
    for ax, name in zip(axes, GATE_NAMES, strict=True):
        label, low_text, high_text, mean_range = bounds[name]
        low, high = per_unit[name]["low"], per_unit[name]["high"]
        ax.bar(units, low, width, color="#3b6fb6", label=low_text, linewidth=0)
        ax.bar(units, high, width, bottom=low, color="#d1495b", label=high_text, linewidth=0)
        # Headroom above 1 holds the legend, so it never hides a bar.
        ax.set_ylim(0.0, 1.0 + _LEGEND_ROOM)
        ax.set_yticks(np.linspace(0.0, 1.0, 6))
        ax.set_ylabel("fraction of steps")
        ax.set_title(
            f"{label}: {100 * np.nanmean(low):.1f}% of steps {low_text}, "
            f"{100 * np.nanmean(high):.1f}% {high_text}"
        )
        mean_ax = ax.twinx()
        mean_ax.plot(
            units,
            per_unit[name]["mean"],
            "o",
            color="black",
            markersize=2.5,
            label="unit mean (right axis)",
        )
        lo, hi = mean_range
        mean_ax.set_ylim(lo, hi + _LEGEND_ROOM * (hi - lo))
        mean_ax.set_yticks(np.linspace(lo, hi, 5))
        mean_ax.set_ylabel("mean")
        handles = ax.get_legend_handles_labels()[0] + mean_ax.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize="small", ncols=3)
    axes[-1].set_xlabel("unit")
    axes[-1].set_xlim(-0.5, n_units - 0.5)
    fig.suptitle(
        title
        if title is not None
        else f"GRU gate saturation per unit ({stats.count:,} steps per unit)"
    )
    if path is not None:
        fig.savefig(os.fspath(path), dpi=120, format="png")
    return fig


def gate_summary(gates: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """Per-gate mean, standard deviation and saturation, as plain floats.

    For the sigmoid gates (update, reset): ``low`` is the fraction below 0.05 and ``high``
    the fraction above 0.95. For the candidate (a tanh): ``saturated`` is the fraction with
    ``|h̃| > 0.95``. Masked steps (0 gates) count like any other value.
    """
    arrays = _check_gates(gates)
    summary: dict[str, dict[str, float]] = {}
    for name, array in arrays.items():
        values = array.astype(np.float64, copy=False)
        stats = {"mean": float(values.mean()), "std": float(values.std())}
        if name == "candidate":
            stats["saturated"] = float((np.abs(values) > 1.0 - SATURATION).mean())
        else:
            stats["low"] = float((values < SATURATION).mean())
            stats["high"] = float((values > 1.0 - SATURATION).mean())
        summary[name] = stats
    return summary


def format_summary(summary: Mapping[str, Mapping[str, float]]) -> str:
    """A small aligned text table of :func:`gate_summary`'s result."""
    columns = [
        ("mean", "mean"),
        ("std", "std"),
        ("low", "<0.05"),
        ("high", ">0.95"),
        ("saturated", "|h|>0.95"),
    ]
    columns = [(key, head) for key, head in columns if any(key in s for s in summary.values())]
    name_width = max([len("gate"), *(len(name) for name in summary)])
    widths = [max(len(head), 6) for _, head in columns]
    lines = [
        "  ".join(
            ["gate".ljust(name_width)]
            + [head.rjust(w) for (_, head), w in zip(columns, widths, strict=True)]
        )
    ]
    for name, stats in summary.items():
        cells = [
            f"{stats[key]:.3f}".rjust(w) if key in stats else "-".rjust(w)
            for (key, _), w in zip(columns, widths, strict=True)
        ]
        lines.append("  ".join([name.ljust(name_width), *cells]))
    return "\n".join(lines)
