"""Edge sizes: batch 0, timesteps 0 and 1, one unit, input width 1, through the op and
the layer, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gategru import GateGRU, gru_sequence
from gategru.reference import gru_layer_reference, gru_sequence_reference


@pytest.mark.parametrize(("batch", "time", "units"), [(0, 5, 3), (2, 0, 3), (2, 1, 3), (3, 4, 1)])
@pytest.mark.parametrize("reset_after", [True, False])
def test_op_edge_sizes_and_their_gradients(rng, batch, time, units, reset_after):
    args = [
        tf.constant(rng.normal(size=s))
        for s in [(batch, time, 3 * units), (batch, units), (units, 3 * units), (3 * units,)]
    ]
    ref = gru_sequence_reference(*(a.numpy() for a in args), reset_after=reset_after)
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = gru_sequence(*args, reset_after=reset_after)
        loss = tf.reduce_sum(out.h_seq) + tf.reduce_sum(out.h_last ** 2)
    np.testing.assert_allclose(out.h_seq, ref.h_seq, atol=1e-12)
    np.testing.assert_allclose(out.h_last, ref.h_last, atol=1e-12)
    grads = tape.gradient(loss, args)
    for arg, grad in zip(args, grads, strict=True):
        assert grad.shape == arg.shape and np.isfinite(grad.numpy()).all()
    if time == 0:  # nothing ran: the state passes straight through
        np.testing.assert_allclose(grads[1], 2 * args[1].numpy())


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
