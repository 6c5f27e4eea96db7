"""float16 and bfloat16 through the op (on the CPU: the float32 kernels on widened copies,
every stored value rounded back) against the float64 oracle on the same rounded inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_mask

from gategru import gru_sequence
from gategru.reference import gru_sequence_reference

# One rounding of a value near 1 in each type, times a small factor for the recurrence.
TOL = {"float16": 4e-3, "bfloat16": 3e-2}


def rounded_inputs(rng, dtype, batch, time, width, units):
    """x, h0, recurrent_kernel, recurrent_bias, kernel, input_bias in `dtype`."""
    shapes = [((batch, time, width), 1.0), ((batch, units), 0.5),
              ((units, 3 * units), units**-0.5), ((3 * units,), 0.3),
              ((width, 3 * units), width**-0.5), ((3 * units,), 0.3)]
    return [tf.cast(rng.normal(size=s) * sc, dtype) for s, sc in shapes]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("projecting", [True, False])
def test_16bit_matches_oracle(rng, dtype, reset_after, projecting):
    batch, time, width, units = 4, 12, 6, 10
    x, h0, u, b, kernel, b_in = rounded_inputs(rng, dtype, batch, time, width, units)
    mask = random_mask(rng, batch, time, "holes")
    f64 = [tf.cast(a, tf.float64).numpy() for a in (x, h0, u, b, kernel, b_in)]
    xw64 = f64[0] @ f64[4] + f64[5]
    if projecting:
        out = gru_sequence(x, h0, u, b, mask=mask, reset_after=reset_after, kernel=kernel,
                           input_bias=b_in)
    else:  # the projections rounded to dtype too
        xw = tf.cast(xw64, dtype)
        xw64 = tf.cast(xw, tf.float64).numpy()
        out = gru_sequence(xw, h0, u, b, mask=mask, reset_after=reset_after)
    ref = gru_sequence_reference(xw64, f64[1], f64[2], f64[3], mask=mask,
                                 reset_after=reset_after)
    for name in ("h_seq", "h_last", "update", "reset", "candidate"):
        got = getattr(out, name)
        assert got.dtype == dtype
        np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), getattr(ref, name),
                                   atol=TOL[dtype], err_msg=name)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_gradients_follow_float32(rng, dtype):
    """The same loss in dtype and in float32: every gradient agrees to dtype's precision."""
    args = rounded_inputs(rng, dtype, 3, 8, 5, 6)
    grads = {}
    for run_dtype in (dtype, "float32"):
        inputs = [tf.cast(a, run_dtype) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            x, h0, u, b, kernel, b_in = inputs
            out = gru_sequence(x, h0, u, b, kernel=kernel, input_bias=b_in)
            loss = tf.reduce_sum(tf.cast(out.h_seq, tf.float32) ** 2) + tf.reduce_sum(
                tf.cast(out.update, tf.float32))
        grads[run_dtype] = [tf.cast(g, tf.float64).numpy() for g in tape.gradient(loss, inputs)]
    for name, low, ref in zip(("x", "h0", "recurrent_kernel", "recurrent_bias", "kernel",
                               "input_bias"), grads[dtype], grads["float32"], strict=True):
        scale = max(1.0, np.abs(ref).max())
        np.testing.assert_allclose(low, ref, atol=TOL[dtype] * scale, err_msg=name)
