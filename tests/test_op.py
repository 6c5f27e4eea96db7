"""The TensorFlow ops: values against the oracle, gradients, shape functions, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_mask

from gategru import gru_sequence
from gategru.reference import gru_sequence_reference


def random_inputs(rng, batch, time, units, dtype=np.float64):
    return [
        tf.constant(v.astype(dtype))
        for v in (
            rng.normal(size=(batch, time, 3 * units)),
            rng.normal(size=(batch, units)) * 0.5,
            rng.normal(size=(units, 3 * units)) / np.sqrt(units),
            rng.normal(size=3 * units) * 0.3,
        )
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_op_matches_oracle(rng, dtype, reset_after, mask_kind):
    batch, time, units = 6, 17, 29
    args = random_inputs(rng, batch, time, units, dtype)
    mask = random_mask(rng, batch, time, mask_kind)
    out = gru_sequence(*args, mask=mask, reset_after=reset_after)
    ref = gru_sequence_reference(*(a.numpy() for a in args), mask=mask, reset_after=reset_after)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for name in ("h_seq", "h_last", "update", "reset", "candidate"):
        got = getattr(out, name)
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), getattr(ref, name), atol=tol, err_msg=name)


def test_without_gates_same_state(rng):
    args = random_inputs(rng, 3, 8, 5, np.float32)
    full = gru_sequence(*args)
    lean = gru_sequence(*args, with_gates=False)
    assert lean.update is None
    np.testing.assert_array_equal(lean.h_seq.numpy(), full.h_seq.numpy())


def test_shape_function_gives_static_shapes():
    @tf.function(input_signature=[
        tf.TensorSpec([None, 12, 15], tf.float32), tf.TensorSpec([None, 5], tf.float32),
        tf.TensorSpec([5, 15], tf.float32), tf.TensorSpec([15], tf.float32),
    ])
    def f(xw, h0, u, b):
        out = gru_sequence(xw, h0, u, b)
        assert out.h_seq.shape.as_list() == [None, 12, 5]
        assert out.h_last.shape.as_list() == [None, 5]
        assert out.candidate.shape.as_list() == [None, 12, 5]
        return out.h_seq

    f.get_concrete_function()
    # known shapes: the kernels' own message while tracing
    with pytest.raises(ValueError, match=r"`h0` must have shape \(2, 5\), got \(2, 4\)"):
        tf.function(lambda: gru_sequence(
            tf.zeros([2, 3, 15]), tf.zeros([2, 4]), tf.zeros([5, 15]), tf.zeros([15])
        )).get_concrete_function()
    # partly known: the rule that failed, naming the argument
    with pytest.raises(ValueError, match=r"`h0` must have shape \(batch, units\)"):
        tf.function(gru_sequence).get_concrete_function(
            tf.TensorSpec([None, 12, 15]), tf.TensorSpec([None, 4]), tf.TensorSpec([5, 15]),
            tf.TensorSpec([15]))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_gradients_numeric_float64(rng, reset_after, mask_kind):
    """tf.test.compute_gradient on a loss touching every output, the gates included."""
    batch, time, units = 3, 5, 4
    xw, h0, u, b = random_inputs(rng, batch, time, units)
    mask = random_mask(rng, batch, time, mask_kind)
    w = [tf.constant(rng.normal(size=s)) for s in
         [(batch, time, units), (batch, units)] + [(batch, time, units)] * 3]

    def loss(xw, h0, u, b):
        out = gru_sequence(xw, h0, u, b, mask=mask, reset_after=reset_after)
        parts = (out.h_seq, out.h_last, out.update, out.reset, out.candidate)
        return tf.reshape(sum(tf.reduce_sum(wi * p) for wi, p in zip(w, parts, strict=True)), [1])

    theoretical, numerical = tf.test.compute_gradient(loss, [xw, h0, u, b], delta=1e-6)
    for name, t, n in zip(("xw", "h0", "recurrent_kernel", "recurrent_bias"), theoretical,
                          numerical, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gradient_through_inference_forward(rng, reset_after):
    """Without gates or without the cache, the gradient recomputes what backward needs and
    equals the one from a training-mode forward (gate losses included where gates exist)."""
    args = random_inputs(rng, 2, 6, 3)
    grads = {}
    for with_gates, keep_cache in ((True, True), (True, False), (False, True)):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = gru_sequence(*args, with_gates=with_gates, keep_cache=keep_cache,
                               reset_after=reset_after)
            loss = tf.reduce_sum(out.h_seq ** 2) + tf.reduce_sum(out.h_last)
            if with_gates:
                loss += tf.reduce_sum(out.reset * out.candidate)
        grads[with_gates, keep_cache] = tape.gradient(loss, args)
    for a, b in zip(grads[True, True], grads[True, False], strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-12)
    with tf.GradientTape() as tape:  # without gates there is no gate loss to compare
        tape.watch(args)
        out = gru_sequence(*args, reset_after=reset_after)
        loss = tf.reduce_sum(out.h_seq ** 2) + tf.reduce_sum(out.h_last)
    for a, b in zip(tape.gradient(loss, args), grads[False, True], strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-12)


def test_bad_inputs_raise_invalid_argument(rng):
    xw, h0, u, b = random_inputs(rng, 2, 3, 4, np.float32)
    cases = [
        (dict(h0=tf.zeros([3, 4])), r"`h0` must have shape \(2, 4\), got \(3, 4\)"),
        (dict(recurrent_bias=tf.zeros([11])), r"`recurrent_bias` must have shape \(12,\)"),
        (dict(mask=tf.ones([2, 5], tf.bool)), r"`mask` must have shape \(2, 3\), got \(2, 5\)"),
        (dict(inputs=tf.zeros([2, 3, 9])),
         r"`inputs` \(the projections xw, no `kernel` given\) must have shape \(batch, "
         r"timesteps, 3\*units\)"),
        (dict(recurrent_kernel=tf.zeros([4, 4])), r"`recurrent_kernel` must have shape"),
    ]
    base = dict(inputs=xw, h0=h0, recurrent_kernel=u, recurrent_bias=b)
    for change, message in cases:
        kwargs = dict(base, **change)
        # eager execution skips the shape function, so the kernel's own checks speak
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            gru_sequence(**kwargs)
    with pytest.raises(TypeError, match="int32"):
        gru_sequence(*(tf.cast(a, tf.int32) for a in (xw, h0, u, b)))


def test_nan_row_does_not_leak_and_gradients_stay_finite(rng):
    xw, h0, u, b = random_inputs(rng, 4, 9, 6, np.float32)
    bad = xw.numpy()
    bad[2, 4, 1] = np.nan
    bad[0] *= 1e30
    xw = tf.constant(bad)
    with tf.GradientTape() as tape:
        tape.watch(xw)
        out = gru_sequence(xw, h0, u, b)
        loss = tf.reduce_sum(out.h_seq)
    grad = tape.gradient(loss, xw).numpy()
    assert np.isnan(out.h_seq.numpy()[2]).any()
    for row in (0, 1, 3):
        assert np.isfinite(out.h_seq.numpy()[row]).all()
        assert np.isfinite(grad[row]).all()


@pytest.mark.parametrize("reset_after", [True, False])
def test_gates_larger_than_the_caches_match_oracle(rng, reset_after):
    """Gate tensors of 32 MB and more are written around the caches (streaming stores)."""
    batch, time, units = 64, 1040, 128  # 34 MB per gate in float32
    args = random_inputs(rng, batch, time, units, np.float32)
    mask = random_mask(rng, batch, time, "holes")
    out = gru_sequence(*args, mask=mask, reset_after=reset_after, keep_cache=False)
    ref = gru_sequence_reference(*(a.numpy() for a in args), mask=mask, reset_after=reset_after)
    for name in ("h_seq", "h_last", "update", "reset", "candidate"):
        np.testing.assert_allclose(getattr(out, name).numpy(), getattr(ref, name), atol=2e-5,
                                   err_msg=name)


@pytest.mark.parametrize("reset_after", [True, False])
def test_backward_op_returns_the_gradient_of_the_recurrent_product(rng, reset_after):
    """d_hu = [d_z, d_r, d_h·r] (reset_after), what the recurrent kernel's gradient needs."""
    from gategru.ops import load_library

    batch, time, units = 5, 9, 7
    xw, h0, u, b = random_inputs(rng, batch, time, units)
    mask = random_mask(rng, batch, time, "holes")
    lib = load_library()
    fwd = lib.gate_gru_forward(xw, h0, u, b, mask, tf.zeros([0], xw.dtype),
                               tf.zeros([0], xw.dtype), reset_after=reset_after)
    d_seq = tf.constant(rng.normal(size=(batch, time, units)))
    out = lib.gate_gru_backward(
        h0=h0, recurrent_kernel=u, mask=mask, h_seq=fwd.h_seq, update=fwd.update,
        reset=fwd.reset, candidate=fwd.candidate, hu_candidate=fwd.hu_candidate,
        d_h_seq=d_seq, d_h_last=tf.constant(rng.normal(size=(batch, units))),
        d_update=tf.zeros([0, 0, 0], xw.dtype), d_reset=tf.zeros([0, 0, 0], xw.dtype),
        d_candidate=tf.zeros([0, 0, 0], xw.dtype), reset_after=reset_after,
    )
    if not reset_after:
        assert out.d_hu.shape == (0, 0, 0)
        return
    d_xw = out.d_xw.numpy()
    want = np.concatenate(
        [d_xw[..., : 2 * units], d_xw[..., 2 * units :] * fwd.reset.numpy()], axis=-1
    )
    np.testing.assert_allclose(out.d_hu.numpy(), want, rtol=1e-14, atol=1e-15)
    assert np.abs(want).min(axis=-1)[~mask].max() == 0 and np.abs(want[mask]).sum() > 0
