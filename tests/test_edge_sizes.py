"""Edge sizes: batch 0, timesteps 0 and 1, one unit, input width 1, through the op and
the layer, against the oracle: values, and gradients of every input against central
differences of the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_mask
from grad_checks import (
    GATES,
    OUTPUTS,
    assert_gradients_match,
    cotangents,
    op_gradients,
    reference,
    reference_loss,
)

from gategru import GateGRU
from gategru.reference import gru_layer_reference

# (batch, timesteps, units, input width: None for the xw form, else the projecting form)
EDGES = [
    ("batch0", 0, 5, 3, None), ("batch0-x", 0, 5, 3, 2),
    ("time0", 2, 0, 3, None), ("time0-x", 2, 0, 3, 2),
    ("time1", 2, 1, 3, None), ("time1-x", 2, 1, 3, 2),
    ("units1", 3, 4, 1, None), ("units1-x", 3, 4, 1, 2),
    ("width1-x", 3, 4, 2, 1), ("all1-x", 1, 1, 1, 1),
]
OP_CASES = [
    pytest.param(batch, time, units, width, masked, id=f"{name}{'-masked' if masked else ''}")
    for name, batch, time, units, width in EDGES
    for masked in ([False, True] if batch and time else [False])
]


def edge_args(rng, batch, time, units, width) -> dict[str, np.ndarray]:
    args = {
        "inputs": rng.normal(size=(batch, time, 3 * units if width is None else width)),
        "h0": rng.normal(size=(batch, units)),
        "recurrent_kernel": rng.normal(size=(units, 3 * units)),
        "recurrent_bias": rng.normal(size=3 * units),
    }
    if width is not None:
        args["kernel"] = rng.normal(size=(width, 3 * units))
        args["input_bias"] = rng.normal(size=3 * units)
    return args


def edge_mask(rng, batch, time) -> np.ndarray:
    """Holes, one row fully masked and one starting masked as the batch allows (conftest's
    random_mask), and row 0 running at least one step, so the weights see a step; a single
    entry is masked: then no step runs at all."""
    mask = random_mask(rng, batch, time, "holes")
    if batch * time > 1:
        mask[0, rng.integers(time)] = True
    else:
        mask[:] = False
    return mask


@pytest.mark.parametrize(("batch", "time", "units", "width", "masked"), OP_CASES)
@pytest.mark.parametrize("reset_after", [True, False])
def test_op_edge_sizes_and_their_gradients(rng, batch, time, units, width, masked, reset_after):
    """Outputs against the oracle; the gradient of a loss on h_seq, h_last and the three
    gates, w.r.t. every input, entry by entry against central differences of the oracle."""
    args = edge_args(rng, batch, time, units, width)
    mask = edge_mask(rng, batch, time) if masked else None
    cot = cotangents(rng, batch, time, units)
    out, grads = op_gradients(args, mask, reset_after, cot)
    ref = reference(args, mask, reset_after)
    for name in OUTPUTS:
        assert getattr(out, name).shape == getattr(ref, name).shape, name
        np.testing.assert_allclose(getattr(out, name), getattr(ref, name), atol=1e-12,
                                   err_msg=name)
    assert_gradients_match(lambda a: reference_loss(a, mask, reset_after, cot), args, grads)
    if batch * time == 0 or (mask is not None and not mask.any()):
        # no step ran: exact zeros (zero-sized with batch or time 0), h0 passes straight through
        for name in ("inputs", "recurrent_kernel", "recurrent_bias", "kernel", "input_bias"):
            if name in grads:
                np.testing.assert_array_equal(grads[name], np.zeros_like(args[name]), name)
        np.testing.assert_array_equal(grads["h0"], cot["h_last"])


@pytest.mark.parametrize(("batch", "time", "features"), [(0, 4, 2), (2, 0, 3), (3, 1, 1)])
def test_layer_edge_sizes(rng, batch, time, features):
    x = rng.normal(size=(batch, time, features)).astype(np.float32)
    layer = GateGRU(4, return_state=True, return_gates=True)
    out, state, gates = layer(x)
    assert out.shape == (batch, 4) and state.shape == (batch, 4)
    assert gates["update"].shape == (batch, time, 4)
    w = layer.get_weights()
    ref = gru_layer_reference(x, *w)
    np.testing.assert_allclose(state, ref.h_last, atol=1e-5)
    expected_out = ref.h_seq[:, -1] if time else np.zeros((batch, 4))
    np.testing.assert_allclose(out, expected_out, atol=1e-5)


LAYER_CASES = [  # (batch, timesteps, input width)
    pytest.param(0, 4, 2, id="batch0"), pytest.param(2, 0, 3, id="time0"),
    pytest.param(3, 1, 2, id="time1"), pytest.param(2, 3, 1, id="width1"),
]


@pytest.mark.parametrize(("batch", "time", "features"), LAYER_CASES)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("dtype", "training"),
                         [("float64", True), ("float64", False), ("float32", True)])
def test_layer_edge_sizes_backward(rng, batch, time, features, reset_after, dtype, training):
    """Gradients w.r.t. the layer's weights (and its inputs) exist, have the weights' shapes
    and dtype, and match central differences of the float64 reference run on the layer's
    own weights (float32: to float32's precision)."""
    units = 4
    layer = GateGRU(units, return_sequences=True, return_state=True, return_gates=True,
                    reset_after=reset_after, dtype=dtype)
    layer.build((None, None, features))
    layer.set_weights([rng.normal(size=w.shape) * 0.7 for w in layer.get_weights()])
    weights = [w.astype(np.float64) for w in layer.get_weights()]  # the values it holds
    x = tf.constant(rng.normal(size=(batch, time, features)), dtype)
    cot = cotangents(rng, batch, time, units)
    with tf.GradientTape() as tape:
        tape.watch(x)
        h_seq, state, gates = layer(x, training=training)
        assert set(gates) == set(GATES)
        parts = {"h_seq": h_seq, "h_last": state, **gates}
        loss = tf.add_n([tf.reduce_sum(tf.constant(w, dtype) * parts[name])
                         for name, w in cot.items()])
    variables = [layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias]
    raw = tape.gradient(loss, [x, *variables])
    for value, grad in zip([x, *variables], raw, strict=True):
        assert grad is not None and grad.shape == value.shape and grad.dtype == dtype
    names = ("inputs", "kernel", "recurrent_kernel", "bias")
    grads = {name: tf.cast(g, tf.float64).numpy() for name, g in zip(names, raw, strict=True)}
    args = {"inputs": tf.cast(x, tf.float64).numpy(), **dict(zip(names[1:], weights,
                                                                 strict=True))}

    def ref_loss(a: dict[str, np.ndarray]) -> float:
        ref = gru_layer_reference(a["inputs"], a["kernel"], a["recurrent_kernel"], a["bias"],
                                  reset_after=reset_after)
        return float(sum(np.sum(w * getattr(ref, name)) for name, w in cot.items()))

    assert_gradients_match(ref_loss, args, grads, rtol=1e-6 if dtype == "float64" else 1e-4)
    if batch == 0 or time == 0:  # no step ran: the weights get exact zeros
        for name in names[1:]:
            np.testing.assert_array_equal(grads[name], 0.0, name)
