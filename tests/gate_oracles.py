"""Float64 oracles for the gates of whole models, built from the models' own weights with
numpy only (the reference GRU, and numpy versions of Masking, Embedding and Dense)."""

from __future__ import annotations

import keras
import numpy as np

from gategru.reference import GruReference, gru_layer_reference

GATES = ("update", "reset", "candidate")


def randomize(model: keras.Model, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Random weights everywhere, biases included, so no gate sits at a trivial value."""
    for layer in model._flatten_layers(include_self=False):
        weights = layer.get_weights()
        if weights and not isinstance(layer, keras.layers.Embedding):
            layer.set_weights([rng.normal(size=w.shape) * scale for w in weights])


def gru_ref(
    layer: keras.layers.GRU,
    x: np.ndarray,
    mask: np.ndarray | None,
    h0: np.ndarray | None = None,
) -> GruReference:
    """The layer's float64 forward pass, outputs in processing order (as Keras)."""
    weights = layer.get_weights()
    bias = weights[2] if layer.cell.use_bias else None
    return gru_layer_reference(
        x,
        weights[0],
        weights[1],
        bias,
        h0=h0,
        mask=mask,
        reset_after=layer.cell.reset_after,
        go_backwards=layer.go_backwards,
    )


def on_input_time(ref: GruReference, go_backwards: bool) -> dict[str, np.ndarray]:
    """The reference gates aligned with the input time axis."""
    return {
        name: getattr(ref, name)[:, ::-1] if go_backwards else getattr(ref, name)
        for name in GATES
    }


def dense(layer: keras.layers.Dense, x: np.ndarray) -> np.ndarray:
    kernel, bias = layer.get_weights()
    return np.asarray(x, np.float64) @ kernel + bias


def padded_inputs(
    rng: np.random.Generator, samples: int, time: int, features: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs with random lengths (zero padding at the end) and a hole of zero steps in
    one sample, for Masking; returns (inputs, mask)."""
    x = rng.normal(size=(samples, time, features)).astype(np.float32)
    lengths = rng.integers(time // 3, time + 1, size=samples)
    lengths[0] = time
    mask = np.arange(time)[None, :] < lengths[:, None]
    if samples > 1 and time > 4:
        mask[1, 1:3] = False
    x[~mask] = 0.0
    return x, mask


def assert_gates_close(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float, label: str = ""
) -> None:
    for name in GATES:
        assert got[name].shape == want[name].shape, (label, name)
        np.testing.assert_allclose(got[name], want[name], atol=atol, err_msg=f"{label} {name}")
