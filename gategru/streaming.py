"""Gates of sequences too long for memory: time chunks, the state carried from one chunk
to the next, each gate written to disk as it comes and summarised on the way.

Peak memory depends on the chunk length, not on the sequence length.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from gategru import __version__
from gategru.gate_files import GateWriter, format_for
from gategru.layers import GATE_NAMES, GateGRU
from gategru.plotting import SATURATION
from gategru.probe import (
    CaptureError,
    GateProbe,
    ProbeOutput,
    _call_arguments,
    _call_key,
    _checked_graph,
    _gru_pairs,
    _nodes,
    shape_text,
)
from gategru.progress import Progress
from gategru.stats import GateStats

# Steps per chunk: long enough that per-call overhead vanishes, short enough to stay in
# cache (3 gates x 8192 steps x 128 units x 4 B = 12 MiB per sample).
DEFAULT_CHUNK_STEPS = 8192

# Layers that treat every time step on its own at inference, so that a chunk of their
# output depends on the same chunk of their input only.
_TIME_LOCAL = (
    keras.layers.InputLayer,
    keras.layers.Masking,
    keras.layers.Embedding,
    keras.layers.Dense,
    keras.layers.TimeDistributed,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Identity,
    keras.layers.Rescaling,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
# Time-local when they work on the feature axis only.
_LAST_AXIS = (
    keras.layers.LayerNormalization,
    keras.layers.BatchNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
    keras.layers.Softmax,
    keras.layers.Concatenate,
)


def _time_local(layer: Any) -> bool:
    if isinstance(layer, _TIME_LOCAL):
        return True
    if isinstance(layer, _LAST_AXIS):
        axes = np.atleast_1d(np.asarray(getattr(layer, "axis", -1))).tolist()
        return all(axis in (-1, 2) for axis in axes)
    if isinstance(layer, keras.layers.Conv1D):
        return tuple(layer.kernel_size) == (1,) and tuple(layer.strides) == (1,)
    return False


def _not_streamable(layer: Any, why: str) -> CaptureError:
    return CaptureError(
        f"'{layer.name}' ({type(layer).__name__}) {why}, so the gates cannot be computed "
        "one time chunk at a time; use gategru.capture on the whole sequence instead"
    )


class StreamProbe(GateProbe):
    """A :class:`~gategru.probe.GateProbe` whose GRUs all take their initial state as
    an input and return their final state, so that a sequence runs chunk by chunk.

    Takes a GRU layer (``keras.layers.GRU`` or ``GateGRU``; inputs ``[x, mask]``) or a
    functional/Sequential model whose layers on the way to each GRU treat time steps
    independently (Masking, Embedding, Dense, normalisation over features, other GRUs
    with ``return_sequences``...). ``go_backwards`` and ``Bidirectional`` need the
    whole sequence and are refused.
    """

    def __init__(self, model_or_layer: Any) -> None:
        self.takes_mask = False  # a single layer takes its mask as a second input
        if isinstance(model_or_layer, keras.layers.Bidirectional):
            raise _not_streamable(model_or_layer, "reads the sequence backwards too")
        if isinstance(model_or_layer, keras.layers.GRU):
            self._from_layer(model_or_layer)
        else:
            graph = _checked_graph(model_or_layer)
            self._start(model_or_layer)
            self._rebuild(graph)
        self._finish()

    def _from_layer(self, layer: keras.layers.GRU) -> None:
        if not layer.built:
            raise CaptureError(f"GRU layer '{layer.name}' is not built yet: it has no weights")
        if layer.go_backwards:
            raise _not_streamable(layer, "reads the sequence backwards")
        self._start(layer)
        x = keras.Input((None, layer.cell.kernel.shape[0]), name="sequences")
        mask = keras.Input((None,), dtype="bool", name="mask")
        self._inputs = [x, mask]
        self.takes_mask = True
        self._add_target(layer.name, layer, x, mask, None, state_input=True)

    def _rebuild(self, graph: Any) -> None:
        """Re-runs the graph's path to every GRU on new inputs of any length, with each
        GRU replaced by its twin, so stacked GRUs carry their state too."""
        needed = _feeding_grus(graph)
        tensors: dict[int, Any] = {}
        self._inputs = []
        for x in graph.inputs:
            shape = (x.shape[0], None, *x.shape[2:]) if len(x.shape) >= 2 else x.shape
            new = keras.Input(batch_shape=shape, dtype=x.dtype, name=x.name)
            tensors[id(x)] = new
            self._inputs.append(new)
        seen: dict[str, int] = {}
        for node in _nodes(graph):
            if id(node) not in needed:
                continue
            layer = node.operation
            pairs = _gru_pairs(layer)
            if pairs is not None and len(pairs) == 2:
                raise _not_streamable(layer, "reads the sequence backwards too")
            if pairs is None and not _time_local(layer):
                raise _not_streamable(layer, "mixes time steps (or is unknown to gategru)")
            args, kwargs = _data_arguments(node, tensors, layer)
            if pairs is None:
                outputs = keras.tree.flatten(layer(*args, **kwargs))
            else:
                outputs = self._stream_gru(node, layer, args[0], seen)
            for old, new in zip(node.outputs, outputs, strict=True):
                if new is not None:
                    tensors[id(old)] = new

    def _stream_gru(self, node: Any, gru: Any, new_x: Any, seen: dict[str, int]) -> list:
        """Calls the twin of ``gru`` on ``new_x``; returns stand-ins for the node's outputs."""
        if gru.go_backwards:
            raise _not_streamable(gru, "reads the sequence backwards")
        x, initial_state, mask = _call_arguments(node)
        if mask is not None and mask is not getattr(x, "_keras_mask", None):
            raise CaptureError(
                f"GRU layer '{gru.name}' is called with an explicit mask tensor; streaming "
                "follows masks that travel with the inputs (Masking, Embedding) only"
            )
        if initial_state is not None:
            raise CaptureError(
                f"GRU layer '{gru.name}' gets its initial state from another tensor of the "
                "model, so it cannot be run in time chunks carrying its own state"
            )
        key = _call_key(gru.name, seen)
        # The new tensor's mask, where the original got one. Passed explicitly: Keras fills
        # a mask in only for calls with one tensor argument, and the twin gets a state too.
        new_mask = None if mask is None else getattr(new_x, "_keras_mask", None)
        sequence, _, gates = self._add_target(key, gru, new_x, new_mask, None, True)
        # Stand-ins for the original outputs; None for those that are not per-step (the
        # last output, the state), which nothing on the way to another GRU may use.
        outputs = [sequence if gru.return_sequences else None]
        if gru.return_state:
            outputs.append(None)
        if isinstance(gru, GateGRU) and gru.return_gates:
            outputs += [gates[name] for name in sorted(GATE_NAMES)]  # tree.flatten's order
        return outputs


def _data_arguments(node: Any, tensors: dict[int, Any], layer: Any) -> tuple[tuple, dict]:
    """The node's arguments on the new tensors, without the mask (Keras recomputes masks
    as the new tensors flow) and without training (inference)."""
    kwargs = {k: v for k, v in node.arguments.kwargs.items() if k not in ("mask", "training")}

    def swap(value: Any) -> Any:
        if not isinstance(value, keras.KerasTensor):
            return value
        if id(value) not in tensors:
            producer = value._keras_history.operation
            raise _not_streamable(
                layer,
                f"uses an output of '{getattr(producer, 'name', producer)}' that is not one "
                "value per time step (a last output or a state)",
            )
        return tensors[id(value)]

    return keras.tree.map_structure(swap, tuple(node.arguments.args)), keras.tree.map_structure(
        swap, kwargs
    )


def _feeding_grus(graph: Any) -> set[int]:
    """ids of the GRU nodes and of every node whose data flows into one (masks aside)."""
    by_id = {}
    pending = [node for node in _nodes(graph) if _gru_pairs(node.operation) is not None]
    while pending:
        node = pending.pop()
        if id(node) in by_id:
            continue
        by_id[id(node)] = node
        kwargs = {k: v for k, v in node.arguments.kwargs.items() if k != "mask"}
        for value in keras.tree.flatten((tuple(node.arguments.args), kwargs)):
            if isinstance(value, keras.KerasTensor):
                operation, index = value._keras_history[:2]
                if operation is not None:
                    pending.append(operation._inbound_nodes[index])
    return set(by_id)


# ---- inputs in time chunks ----------------------------------------------------------------
Chunks = Iterator[list[np.ndarray]]


def _time_chunks(
    inputs: Any, chunk_steps: int, probe: StreamProbe, mask: Any
) -> tuple[Chunks, int | None]:
    """(an iterator over chunks, each a list with one array per probe input; total steps
    or None when the inputs are a stream)."""
    if callable(inputs) and not hasattr(inputs, "shape"):
        inputs = inputs()
    arrays = _as_arrays(inputs, probe, mask)
    if arrays is not None:
        total = int(arrays[0].shape[1])

        def from_arrays() -> Chunks:
            for start in range(0, total, chunk_steps):
                # np.asarray reads just this window of a memmap or an h5py dataset
                yield [np.asarray(a[:, start : start + chunk_steps]) for a in arrays]

        return from_arrays(), total

    def from_stream() -> Chunks:
        for item in inputs:
            parts = _as_arrays(item, probe, None)
            if parts is None:
                raise TypeError(
                    "a stream of chunks must yield arrays of shape (samples, steps, ...)"
                )
            steps = parts[0].shape[1]
            for start in range(0, steps, chunk_steps):  # split chunks bigger than asked
                yield [np.asarray(p[:, start : start + chunk_steps]) for p in parts]

    return from_stream(), None


def _as_arrays(value: Any, probe: StreamProbe, mask: Any) -> list | None:
    """One array-like per probe input, or None when ``value`` is a stream."""
    n_inputs = len(probe._inputs)
    if hasattr(value, "shape") and hasattr(value, "__getitem__"):
        parts = [value]
    elif isinstance(value, (list, tuple)) and all(hasattr(v, "shape") for v in value):
        parts = list(value)
    else:
        return None
    if probe.takes_mask and len(parts) == 1:
        if mask is None:
            mask = np.ones(parts[0].shape[:2], bool)
        parts.append(mask)
    if len(parts) != n_inputs:
        raise ValueError(f"expected {n_inputs} input array(s), got {len(parts)}")
    for part in parts:
        if len(part.shape) < 2 or part.shape[:2] != parts[0].shape[:2]:
            raise ValueError(
                "inputs must all have shape (samples, timesteps, ...) with the same "
                f"samples and timesteps; got {[shape_text(p.shape) for p in parts]}"
            )
    return parts


class _Background:
    """One worker thread for writing and statistics, so that they overlap the next chunk's
    computation (the op releases the GIL). At most ``depth`` chunks wait: memory stays
    bounded by the chunk length."""

    def __init__(self, depth: int = 2) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="gategru-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:  # after a failure, drain without working
                try:
                    job[0](*job[1:])
                except BaseException as err:  # re-raised in the caller's thread
                    self._error = err

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._check()
        self._jobs.put((fn, *args))

    def close(self) -> None:
        """Waits for the queued work; raises what it raised."""
        self._jobs.put(None)
        self._thread.join()
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


# ---- the public functions -----------------------------------------------------------------
@dataclass
class StreamResult:
    """What :func:`capture_to_file` did.

    path, format, dtype: where and how the gates were written (path None: not written).
    samples, timesteps: the shape of every gate array but its units.
    stats: ``{key: GateStats}`` per captured layer (empty with ``stats=False``).
    seconds: wall time; ``steps_per_second`` the time steps processed per second.
    """

    path: str | None
    format: str | None
    dtype: str
    samples: int
    timesteps: int
    keys: list[str]
    stats: dict[str, GateStats] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.timesteps / self.seconds if self.seconds > 0 else float("nan")


def iter_gate_chunks(
    model_or_layer: Any,
    inputs: Any,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    mask: Any = None,
    progress: bool | None = None,
) -> Iterator[tuple[int, ProbeOutput]]:
    """Yields ``(start, output)`` per time chunk: ``output.gates[key][name]`` is (samples,
    steps, units) for time steps ``start ...``; the state is carried between chunks.

    Args as :func:`capture_to_file`.
    """
    if chunk_steps < 1:
        raise ValueError(f"chunk_steps must be at least 1, got {chunk_steps}")
    if isinstance(model_or_layer, StreamProbe):
        probe = model_or_layer
    else:
        probe = StreamProbe(model_or_layer)
    chunks, total = _time_chunks(inputs, int(chunk_steps), probe, mask)
    states = None
    start = 0
    with Progress(total, "steps", progress, "gates") as bar:
        for chunk in chunks:
            if states is None:
                states = probe.initial_states(chunk[0].shape[0])
            output = probe.run_batch(chunk, states)
            states = output.states
            yield start, output
            steps = chunk[0].shape[1]
            start += steps
            bar.update(steps)


def capture_to_file(
    model_or_layer: Any,
    inputs: Any,
    path: str | os.PathLike | None,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    dtype: str = "float32",
    format: str | None = None,
    mask: Any = None,
    timesteps: int | None = None,
    stats: bool = True,
    saturation: float = SATURATION,
    progress: bool | None = None,
) -> StreamResult:
    """Runs a long sequence in time chunks, writing every gate to disk as it goes.

    Args:
      model_or_layer: a GRU layer (``keras.layers.GRU`` or ``GateGRU``), or a functional /
        Sequential model whose layers up to each GRU work step by step (see
        :class:`StreamProbe`); every GRU carries its state from chunk to chunk.
      inputs: (samples, timesteps, features) as a numpy array, a memmap
        (``np.load(path, mmap_mode="r")``), an h5py dataset, a list of those for a
        multi-input model, or an iterable of chunks (samples, steps, features) (or a
        callable returning one, e.g. a generator function) when the data arrives as a
        stream.
      path: an ``.h5``/``.hdf5`` file (datasets ``/<layer>/<gate>``) or a folder of
        ``<layer>/<gate>.npy`` files; None writes nothing (statistics only).
      chunk_steps: time steps per chunk; peak memory grows with it, not with timesteps.
      dtype: "float32" or "float16" (half the disk; about 3 significant digits).
      format: "h5" or "npy"; default from the path's suffix (npy unless .h5/.hdf5).
      mask: (samples, timesteps) bool for a single GRU layer (a model computes its own).
      timesteps: unused with arrays; for a stream written as npy with several samples,
        the total length (HDF5 and single-sample npy files grow as chunks come).
      stats: also accumulate per-unit :class:`~gategru.stats.GateStats` (masked steps
        left out).
      saturation: the distance from a bound that counts as saturated, for the stats.
      progress: True shows a progress bar on stderr, False never, None after a second.

    Returns:
      A :class:`StreamResult` with the statistics and the speed.

    The model and its weights are unchanged; stateful GRUs start from their stored state
    (and keep it).
    """
    started = time.perf_counter()
    fmt = None if path is None else format_for(path, format)
    probe = StreamProbe(model_or_layer)
    accumulators = {key: GateStats(saturation) for key in probe.keys} if stats else {}
    writer: GateWriter | None = None
    background = _Background()
    samples = total = 0

    def consume(start: int, output: ProbeOutput) -> None:
        for key, gates in output.gates.items():
            if writer is not None:
                writer.write(key, gates, slice(0, samples), start)
            if stats:
                accumulators[key].update(gates, output.masks.get(key))

    try:
        for start, output in iter_gate_chunks(probe, inputs, chunk_steps, mask, progress):
            first = next(iter(output.gates.values()))["update"]
            samples = first.shape[0]
            if writer is None and path is not None:
                length = _known_length(inputs, timesteps)
                layers = {t.key: (samples, length, t.layer.units) for t in probe.targets}
                attrs = {"gategru_version": __version__, "time_axis": "input"}
                writer = GateWriter(path, layers, fmt, dtype, attrs)
            background.submit(consume, start, output)
            total = start + first.shape[1]
    finally:
        try:
            background.close()
        finally:
            if writer is not None:
                writer.close()
    return StreamResult(
        path=None if path is None else os.fspath(path),
        format=fmt,
        dtype=np.dtype(dtype).name,
        samples=samples,
        timesteps=total,
        keys=probe.keys,
        stats=accumulators,
        seconds=time.perf_counter() - started,
    )


def _known_length(inputs: Any, timesteps: int | None) -> int | None:
    if hasattr(inputs, "shape") and len(inputs.shape) >= 2:
        return int(inputs.shape[1])
    if isinstance(inputs, (list, tuple)) and inputs and hasattr(inputs[0], "shape"):
        return int(inputs[0].shape[1])
    return timesteps


def stream_stats(
    model_or_layer: Any,
    inputs: Any,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    mask: Any = None,
    saturation: float = SATURATION,
    progress: bool | None = None,
) -> dict[str, GateStats]:
    """Per-unit gate statistics of a long run, chunk by chunk, storing no gates:
    ``{key: GateStats}``. Arguments as :func:`capture_to_file`."""
    result = capture_to_file(
        model_or_layer,
        inputs,
        None,
        chunk_steps=chunk_steps,
        mask=mask,
        saturation=saturation,
        progress=progress,
    )
    return result.stats
