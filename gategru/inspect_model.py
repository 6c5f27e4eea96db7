"""``gategru inspect``: the gates of a saved model's GRU layers on given inputs, to HDF5,
with a summary table and pictures."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gategru import __version__

# Heatmaps show at most this many steps: more are neither drawable nor readable.
PLOT_STEPS = 2000


def _check_file(path: str, what: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    if file.is_dir():
        raise IsADirectoryError(f"{what} {path!r} is a directory, not a file")
    return file


def _load_inputs(path: str) -> np.ndarray:
    _check_file(path, "inputs file")
    try:
        # memory-mapped: inputs larger than memory are read one batch at a time
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise ValueError(f"cannot read {path!r} as a .npy array: {err}") from err
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path!r} holds several arrays (.npz); give one .npy array")
    if array.dtype == object:
        raise ValueError(f"{path!r} holds Python objects, not numbers")
    return array


def _load_model(path: str) -> Any:
    _check_file(path, "model file")
    import keras

    import gategru.layers  # noqa: F401  (registers GateGRU, so saved GateGRU models load)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. about a missing optimizer state
            return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise ValueError(f"cannot load a Keras model from {path!r}: {err}") from err


def _plot_paths(plot: str, keys: list[str]) -> dict[str, tuple[str, str]]:
    """``{key: (heatmap path, saturation path)}``: one pair per layer, named after it when
    there are several."""
    base = Path(plot)
    suffix = base.suffix or ".png"
    stem = base.with_suffix("")
    paths = {}
    for key in keys:
        name = stem if len(keys) == 1 else Path(f"{stem}_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}")
        paths[key] = (f"{name}{suffix}", f"{name}_saturation{suffix}")
    return paths


def inspect_model(
    model_path: str,
    inputs_path: str,
    out: str,
    plot: str | None = None,
    batch_size: int | None = None,
    sample: int = 0,
    dtype: str = "float32",
    progress: bool | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Captures every GRU layer of the saved model on the inputs and writes the gates.

    Writes HDF5 ``out`` with datasets ``/<layer>/<gate>`` (samples, timesteps, units) on
    the input time axis, prints a per-layer, per-gate summary (masked steps left out),
    and with ``plot`` draws, per layer, sample ``sample``'s gates and a per-unit
    saturation overview.

    Returns:
      ``{"out", "keys", "stats" ({key: GateStats}), "plots" (list of paths)}``.
    """
    out_dir = Path(out).resolve().parent
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {str(out_dir)!r} does not exist")
    if plot is not None and not Path(plot).resolve().parent.is_dir():
        raise FileNotFoundError(f"plot directory {str(Path(plot).parent)!r} does not exist")
    inputs = _load_inputs(inputs_path)
    model = _load_model(model_path)

    from gategru.gate_files import GateWriter
    from gategru.plotting import format_summary
    from gategru.probe import GateProbe, check_inputs
    from gategru.stats import GateStats

    probe = GateProbe(model)
    if len(probe.model_inputs) != 1:
        raise ValueError(
            f"model '{model.name}' takes {len(probe.model_inputs)} inputs; inspect feeds it "
            "one array (use gategru.capture from Python for several)"
        )
    samples = check_inputs(model.name, probe.model_inputs, [inputs])
    if not -samples <= sample < samples:
        raise IndexError(f"--sample {sample} is out of range for {samples} samples")
    sample %= samples
    timesteps = int(inputs.shape[1])

    layers = {t.key: (samples, timesteps, t.layer.units) for t in probe.targets}
    stats = {key: GateStats() for key in layers}
    shown: dict[str, dict[str, np.ndarray]] = {}
    attrs = {
        "gategru_version": __version__,
        "model": os.fspath(model_path),
        "inputs": os.fspath(inputs_path),
        "time_axis": "input",
    }
    with GateWriter(out, layers, "h5", dtype, attrs) as writer:
        for part, output in probe.iter_batches(inputs, batch_size, progress):
            for key, gates in output.gates.items():
                writer.write(key, gates, part, 0)
                stats[key].update(gates, output.masks.get(key))
                if part.start <= sample < part.stop:
                    shown[key] = {n: g[sample - part.start][None] for n, g in gates.items()}

    say(f"model '{model.name}', inputs {inputs.shape}: {len(layers)} GRU layer(s)")
    for key, (_, _, units) in layers.items():
        say(f"\n{key} ({units} units, {stats[key].count:,} unmasked steps per unit)")
        say(format_summary(stats[key].summary()))
    say(f"\ngates written to {out}")

    plots: list[str] = []
    if plot is not None:
        from gategru.plotting import plot_gates, plot_saturation

        # The input signal above the heatmaps when it is a few numeric channels.
        signal = None
        if inputs.ndim == 3 and inputs.dtype.kind == "f" and inputs.shape[2] <= 16:
            signal = np.asarray(inputs[sample : sample + 1])
        steps = min(timesteps, PLOT_STEPS)
        cut = "" if steps == timesteps else f", first {steps} of {timesteps} steps"
        for key, (heatmap, saturation) in _plot_paths(plot, list(layers)).items():
            plot_gates(
                {name: gate[:, :steps] for name, gate in shown[key].items()},
                inputs=None if signal is None else signal[:, :steps],
                path=heatmap,
                title=f"{key}: gates of sample {sample}{cut}",
            )
            plot_saturation(
                stats[key],
                path=saturation,
                title=f"{key}: saturation per unit over {samples} samples",
            )
            plots += [heatmap, saturation]
        say("pictures: " + ", ".join(plots))
    return {"out": os.fspath(out), "keys": list(layers), "stats": stats, "plots": plots}
