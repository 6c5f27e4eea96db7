"""Gates of the GRU layers of an existing Keras model, without changing the model.

For every GRU layer (``keras.layers.GRU`` or ``GateGRU``, also inside ``Bidirectional``)
the probe builds a ``GateGRU`` twin with the same config and weights and
``return_gates=True``, and calls it on the very tensor (and mask, and initial state) that
reaches the original layer in the model's graph. The probe is a new functional model over
the model's inputs: the original layers, weights and predictions are left alone.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from gategru.layers import GATE_NAMES, GateGRU
from gategru.progress import Progress

Gates = dict[str, np.ndarray]

_SUBCLASSED_HELP = (
    "Either build the GRU as gategru.GateGRU(..., return_gates=True) inside the model and "
    "return its gates from call(), or express the model with the functional API "
    "(keras.Model(inputs, outputs)) or as a keras.Sequential, whose layer inputs capture "
    "can reach."
)


class CaptureError(ValueError):
    """The model's GRU layers cannot be reached (or it has none)."""


@dataclass
class _Target:
    """One captured GRU call: the original layer, its twin and how to align its gates."""

    key: str
    layer: keras.layers.GRU
    twin: GateGRU
    flip: bool  # the twin's gates come in processing order: reversed time for go_backwards
    has_state_input: bool


@dataclass
class ProbeOutput:
    """One batch through a :class:`GateProbe`.

    gates: ``{key: {"update", "reset", "candidate"}}`` (batch, timesteps, units) on the
        input time axis.
    masks: ``{key: (batch, timesteps) bool}`` for the GRU calls that received a mask.
    states: the final state of every target, in :attr:`GateProbe.keys` order.
    """

    gates: dict[str, Gates]
    masks: dict[str, np.ndarray]
    states: list[np.ndarray]


def _graph(model: object) -> Any:
    """The functional graph behind a model (Functional, or a built Sequential), or None."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def _nodes(graph: Any) -> list:
    """The graph's call nodes, inputs first (the order Keras runs them in)."""
    by_depth = graph._nodes_by_depth
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    return [node for node in nodes if node.operation is not None and not node.is_input]


def gru_layers(layer: object) -> list[str]:
    """Names of every GRU layer in a model or layer (nested models and wrappers included)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return [sub.name for sub in flatten(include_self=True) if isinstance(sub, keras.layers.GRU)]


def _checked_graph(model: object) -> Any:
    """The model's functional graph, or a CaptureError that says what to do."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"capture needs a keras.Model, got {type(model).__name__}")
    graph = _graph(model)
    if graph is not None and model.built:
        return graph
    if not gru_layers(model):
        raise CaptureError(f"model '{model.name}' has no GRU layers")
    if not model.built:
        raise CaptureError(
            f"model '{model.name}' is not built yet, so it has no weights to inspect: call "
            "it on data (or load trained weights) first"
        )
    raise CaptureError(
        f"capture cannot reach the inputs of the GRU layers {gru_layers(model)} of "
        f"'{model.name}': it is a subclassed model ({type(model).__name__}), whose call() "
        "wires its layers in Python code that capture cannot see. " + _SUBCLASSED_HELP
    )


def _gru_pairs(layer: Any) -> list[tuple[Any, str | None]] | None:
    """The GRUs a node runs, with their direction: None when it runs no GRU directly."""
    if isinstance(layer, keras.layers.GRU):
        return [(layer, None)]
    if isinstance(layer, keras.layers.Bidirectional) and isinstance(
        layer.forward_layer, keras.layers.GRU
    ):
        return [(layer.forward_layer, "forward"), (layer.backward_layer, "backward")]
    return None


def _call_key(name: str, seen: dict[str, int]) -> str:
    """A layer's name, or ``name:i`` for its i-th further call in the graph."""
    calls = seen.get(name, 0)
    seen[name] = calls + 1
    return name if calls == 0 else f"{name}:{calls}"


def _twin(key: str, layer: keras.layers.GRU) -> GateGRU:
    config = {
        **layer.get_config(),
        "return_gates": True,
        "return_sequences": True,
        "return_state": True,  # the final state: chunked runs carry it to the next chunk
        "stateful": False,
        # unique within the probe, even for a layer called twice ("gru:1")
        "name": re.sub(r"[^A-Za-z0-9_]", "_", key) + "_gates",
    }
    return GateGRU.from_config(config)


class GateProbe:
    """Runs a model's GRU layers as gate-returning twins; reusable across calls.

    Args:
      model: a built functional or Sequential Keras model with GRU layers.

    ``probe(inputs, batch_size)`` returns the gates of all samples, as :func:`capture`;
    ``probe.run_batch(inputs)`` one batch with its masks and final states. Call
    :meth:`sync` after the model's weights change: the twins hold copies.
    """

    def __init__(self, model: keras.Model) -> None:
        graph = _checked_graph(model)
        self._start(model)
        self._inputs = list(graph.inputs)
        self._collect(graph)
        self._finish()

    # ---- building ----------------------------------------------------------------------------
    def _start(self, model: Any) -> None:
        self.name = model.name
        # weak: capture() caches probes per model, and a probe must not keep its model alive
        self._model = weakref.ref(model)
        self.targets: list[_Target] = []
        self._state_inputs: list[Any] = []
        self._outputs: dict[str, dict] = {"gates": {}, "masks": {}, "states": {}}

    def _finish(self) -> None:
        if not self.targets:
            raise CaptureError(
                f"model '{self.name}' has no GRU layers (keras.layers.GRU or GateGRU) to capture"
            )
        self.sync()
        outputs = {name: part for name, part in self._outputs.items() if part}
        self._probe = keras.Model(
            [*self._inputs, *self._state_inputs], outputs, name=f"{self.name}_gates"
        )
        self._specs = [
            tf.TensorSpec(x.shape, x.dtype) for x in [*self._inputs, *self._state_inputs]
        ]
        # One trace for every batch size and length (predict_on_batch retraces per shape).
        self._forward = tf.function(
            lambda *xs: self._probe(list(xs), training=False), input_signature=self._specs
        )
        twins = {id(target.twin) for target in self.targets}
        # Stateful layers on the way to a GRU (a stateful GRU below another) would advance
        # their state when the probe runs: run_batch puts it back.
        self._stateful = [
            layer
            for layer in self._probe._flatten_layers(include_self=False)
            if getattr(layer, "stateful", False)
            and hasattr(layer, "states")
            and id(layer) not in twins
        ]

    def _collect(self, graph: Any) -> None:
        seen: dict[str, int] = {}
        for node in _nodes(graph):
            pairs = _gru_pairs(node.operation)
            if pairs is None:
                if gru_layers(node.operation):
                    raise CaptureError(self._unreachable(node.operation))
                continue
            key = _call_key(node.operation.name, seen)
            x, initial_state, mask = _call_arguments(node)
            states = _split_states(initial_state, len(pairs))
            for (gru, direction), state in zip(pairs, states, strict=True):
                full_key = key if direction is None else f"{key}/{direction}"
                self._add_target(full_key, gru, x, mask, state, state_input=gru.stateful)

    def _unreachable(self, layer: Any) -> str:
        nested = _graph(layer) is not None
        where = "the nested model" if nested else "the custom layer"
        fix = (
            f"Capture the nested model on its own inputs: capture(model.get_layer("
            f"'{layer.name}'), inputs_of_{layer.name})."
            if nested
            else _SUBCLASSED_HELP
        )
        return (
            f"GRU layer(s) {gru_layers(layer)} sit inside {where} '{layer.name}' "
            f"({type(layer).__name__}), whose inner inputs capture cannot reach from the "
            f"inputs of '{self.name}'. " + fix
        )

    def _add_target(
        self, key: str, gru: Any, x: Any, mask: Any, state: Any, state_input: bool
    ) -> tuple:
        """Calls a twin of ``gru`` on ``x``; returns its (sequence, final state, gates)."""
        twin = _twin(key, gru)
        if state_input:
            if state is not None:
                raise CaptureError(
                    f"GRU layer '{gru.name}' gets its initial state from another tensor of "
                    "the model, so it cannot start from a carried or stored state"
                )
            state = keras.Input((gru.units,), name=f"{twin.name}_initial_state")
            self._state_inputs.append(state)
        kwargs = {"mask": mask}  # exactly what the original got: its node recorded it
        if state is not None:
            kwargs["initial_state"] = state
        sequence, final_state, gates = twin(x, **kwargs)
        self.targets.append(_Target(key, gru, twin, bool(gru.go_backwards), state_input))
        self._outputs["gates"][key] = gates
        self._outputs["states"][key] = final_state
        if mask is not None:
            self._outputs["masks"][key] = mask
        return sequence, final_state, gates

    # ---- running -----------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The model (or layer) the probe was built for; None once it is gone."""
        return self._model()

    @property
    def model_inputs(self) -> list:
        """The symbolic inputs the probe takes (besides initial states)."""
        return list(self._inputs)

    @property
    def keys(self) -> list[str]:
        return [target.key for target in self.targets]

    def sync(self) -> None:
        """Copies the current weights of the model's GRU layers into the twins."""
        for target in self.targets:
            target.twin.set_weights(target.layer.get_weights())

    def initial_states(self, batch: int) -> list[np.ndarray]:
        """What the state inputs start from: a stateful layer's stored state, else zeros."""
        states = []
        for target in self.targets:
            if not target.has_state_input:
                continue
            dtype = target.twin.compute_dtype
            if target.layer.stateful:
                stored = np.asarray(target.layer.states[0].numpy())
                if stored.shape[0] != batch:
                    raise CaptureError(
                        f"stateful GRU layer '{target.layer.name}' holds states for "
                        f"{stored.shape[0]} samples; pass exactly that many samples, in one "
                        f"batch (got a batch of {batch})"
                    )
                states.append(stored.astype(dtype))
            else:
                states.append(np.zeros((batch, target.layer.units), dtype))
        return states

    def flat_inputs(self, inputs: object) -> list:
        """The model's inputs as a list in its input order (a dict goes by input name)."""
        if isinstance(inputs, Mapping):
            names = [x.name for x in self._inputs]
            missing = [name for name in names if name not in inputs]
            if missing:
                raise ValueError(f"inputs lack {missing}; the model's inputs are {names}")
            return [inputs[name] for name in names]
        flat = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(flat) != len(self._inputs):
            raise ValueError(
                f"model '{self.name}' takes {len(self._inputs)} input(s), got {len(flat)}"
            )
        return flat

    def run_batch(self, inputs: object, states: list[np.ndarray] | None = None) -> ProbeOutput:
        """One batch: gates on the input time axis, masks and final states.

        ``states``: one (batch, units) array per state input (stateful GRUs here; every
        GRU in a :class:`~gategru.streaming.StreamProbe`); default :meth:`initial_states`.
        """
        flat = self.flat_inputs(inputs)
        if states is None:
            states = self.initial_states(flat[0].shape[0])
        saved = [[v.numpy() for v in layer.states] for layer in self._stateful]
        try:
            arrays = [
                np.asarray(a, s.dtype.as_numpy_dtype)
                for a, s in zip([*flat, *states], self._specs, strict=True)
            ]
            result = keras.tree.map_structure(np.asarray, self._forward(*arrays))
        finally:
            for layer, values in zip(self._stateful, saved, strict=True):
                for variable, value in zip(layer.states, values, strict=True):
                    variable.assign(value)
        gates = {}
        for target in self.targets:
            raw = result["gates"][target.key]
            gates[target.key] = {
                name: np.asarray(raw[name])[:, ::-1] if target.flip else np.asarray(raw[name])
                for name in GATE_NAMES
            }
        masks = {key: np.asarray(m, bool) for key, m in result.get("masks", {}).items()}
        final = [np.asarray(result["states"][target.key]) for target in self.targets]
        return ProbeOutput(gates, masks, final)

    def iter_batches(
        self, inputs: object, batch_size: int | None = None, progress: bool | None = None
    ) -> Iterator[tuple[slice, ProbeOutput]]:
        """Yields ``(sample_slice, output)`` batch by batch, so results need not fit in
        memory. ``inputs`` may be numpy memmaps (``np.load(path, mmap_mode="r")``): only
        one batch of them is read at a time."""
        flat = self.flat_inputs(inputs)
        samples = check_inputs(self.name, self._inputs, flat)
        size = samples if batch_size is None else int(batch_size)
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        with Progress(samples, "samples", progress, "capture") as bar:
            for start in range(0, samples, size):
                part = slice(start, min(start + size, samples))
                yield part, self.run_batch([a[part] for a in flat])
                bar.update(part.stop - part.start)

    def __call__(
        self, inputs: object, batch_size: int | None = None, progress: bool | None = None
    ) -> dict[str, Gates]:
        result: dict[str, Gates] = {}
        samples = int(np.shape(self.flat_inputs(inputs)[0])[0])
        for part, output in self.iter_batches(inputs, batch_size, progress):
            for key, layer_gates in output.gates.items():
                if key not in result:  # allocated once the first batch tells the dtype
                    result[key] = {
                        name: np.empty((samples, *g.shape[1:]), g.dtype)
                        for name, g in layer_gates.items()
                    }
                for name, g in layer_gates.items():
                    result[key][name][part] = g
        return result


def _call_arguments(node: Any) -> tuple[Any, Any, Any]:
    """(inputs, initial_state, mask) a GRU or Bidirectional node was called with."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    x = args[0] if args else kwargs["sequences"]
    initial_state = args[1] if len(args) > 1 else kwargs.get("initial_state")
    mask = args[2] if len(args) > 2 else kwargs.get("mask")
    return x, initial_state, mask


def _split_states(initial_state: Any, parts: int) -> list[Any]:
    if initial_state is None:
        return [None] * parts
    states = keras.tree.flatten(initial_state)
    if parts == 1:
        return [states[0]]
    half = len(states) // 2  # Bidirectional: forward states first, as Keras splits them
    return [states[:half][0], states[half:][0]]


def shape_text(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def check_inputs(name: str, expected: list, leaves: list) -> int:
    """The number of samples, after checking the inputs against the model's inputs."""
    samples = None
    for leaf, spec in zip(leaves, expected, strict=True):
        shape = tuple(np.shape(leaf))
        want = tuple(spec.shape)
        if len(shape) != len(want) or any(
            w is not None and w != s for w, s in zip(want[1:], shape[1:], strict=True)
        ):
            raise ValueError(
                f"model '{name}' expects inputs of shape {shape_text(want)} "
                f"(None: any size), got an array of shape {shape_text(shape)}"
            )
        if samples is None:
            samples = shape[0]
        elif shape[0] != samples:
            raise ValueError(f"inputs disagree on the number of samples: {samples} vs {shape[0]}")
    return int(samples)


def capture(
    model: keras.Model,
    inputs: object,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> dict[str, Gates]:
    """The gates of every GRU layer of ``model`` on ``inputs``.

    Args:
      model: a built functional or Sequential Keras model with ``keras.layers.GRU`` or
        ``GateGRU`` layers (also inside ``Bidirectional``, after ``Masking`` or
        ``Embedding(mask_zero=True)``, stacked, or stateful).
      inputs: what the model takes (an array, or a list/dict of arrays); numpy memmaps
        work and are read one batch at a time.
      batch_size: samples per forward pass (default: all at once).
      progress: True shows a progress bar on stderr, False never, None (default) once the
        work has taken more than a second.

    Returns:
      ``{key: {"update", "reset", "candidate"}}``: one entry per GRU layer keyed by its
      name (``"<name>/forward"`` and ``"<name>/backward"`` for a ``Bidirectional``; a layer
      called again in the graph gets ``"<name>:1"``, ...). Each gate is a numpy array
      (samples, timesteps, units) in the layer's compute dtype, aligned with the input
      time axis (``[:, t]`` is the step that read ``inputs[:, t]``, for both directions),
      0 at masked steps. Stateful layers start from their stored state and keep it.

    Raises:
      CaptureError: no GRU layers, or GRU layers whose inputs cannot be reached (a
        subclassed model or a custom layer that calls a GRU inside).

    The model, its weights and its predictions are not changed.
    """
    return _cached_probe(model)(inputs, batch_size=batch_size, progress=progress)


# model -> (its graph, probe): repeated captures reuse one traced probe.
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached_probe(model: keras.Model) -> GateProbe:
    graph = _graph(model) if isinstance(model, keras.Model) else None
    cached = _PROBES.get(model) if graph is not None else None
    if cached is not None and cached[0]() is graph:  # a Sequential may have grown since
        cached[1].sync()  # the weights may have changed since
        return cached[1]
    probe = GateProbe(model)
    _PROBES[model] = (weakref.ref(graph), probe)
    return probe
