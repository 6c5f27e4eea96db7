"""The op's projecting form (inputs x with kernel and input_bias): values against the
oracle on x·W + b_in, gradients of every input, and the recompute path."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_mask

from gategru import gru_sequence
from gategru.reference import gru_sequence_reference


def projecting_inputs(rng, batch, time, width, units, dtype=np.float64):
    """x, h0, recurrent_kernel, recurrent_bias, kernel, input_bias."""
    return [
        tf.constant(v.astype(dtype))
        for v in (
            rng.normal(size=(batch, time, width)),
            rng.normal(size=(batch, units)) * 0.5,
            rng.normal(size=(units, 3 * units)) / np.sqrt(units),
            rng.normal(size=3 * units) * 0.3,
            rng.normal(size=(width, 3 * units)) / np.sqrt(width),
            rng.normal(size=3 * units) * 0.3,
        )
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_projecting_op_matches_oracle(rng, dtype, reset_after, mask_kind):
    batch, time, width, units = 5, 13, 11, 21
    x, h0, u, b, kernel, b_in = projecting_inputs(rng, batch, time, width, units, dtype)
    mask = random_mask(rng, batch, time, mask_kind)
    out = gru_sequence(x, h0, u, b, mask=mask, reset_after=reset_after, kernel=kernel,
                       input_bias=b_in)
    xw = x.numpy().astype(np.float64) @ kernel.numpy() + b_in.numpy()
    ref = gru_sequence_reference(xw, h0.numpy(), u.numpy(), b.numpy(), mask=mask,
                                 reset_after=reset_after)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for name in ("h_seq", "h_last", "update", "reset", "candidate"):
        got = getattr(out, name)
        assert got.dtype == dtype
        np.testing.assert_allclose(got.numpy(), getattr(ref, name), atol=tol, err_msg=name)


def test_input_bias_defaults_to_zero(rng):
    x, h0, u, b, kernel, _ = projecting_inputs(rng, 2, 4, 3, 5, np.float32)
    implicit = gru_sequence(x, h0, u, b, kernel=kernel)
    explicit = gru_sequence(x, h0, u, b, kernel=kernel, input_bias=tf.zeros([15]))
    np.testing.assert_array_equal(implicit.h_seq.numpy(), explicit.h_seq.numpy())


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_projecting_gradients_numeric_float64(rng, reset_after, mask_kind):
    """Every float input, gates in the loss: x, h0, both kernels and both biases."""
    batch, time, width, units = 3, 4, 5, 4
    args = projecting_inputs(rng, batch, time, width, units)
    mask = random_mask(rng, batch, time, mask_kind)
    w = [tf.constant(rng.normal(size=s)) for s in
         [(batch, time, units), (batch, units)] + [(batch, time, units)] * 3]

    def loss(x, h0, u, b, kernel, b_in):
        out = gru_sequence(x, h0, u, b, mask=mask, reset_after=reset_after, kernel=kernel,
                           input_bias=b_in)
        parts = (out.h_seq, out.h_last, out.update, out.reset, out.candidate)
        return tf.reshape(sum(tf.reduce_sum(wi * p) for wi, p in zip(w, parts, strict=True)), [1])

    theoretical, numerical = tf.test.compute_gradient(loss, args, delta=1e-6)
    names = ("x", "h0", "recurrent_kernel", "recurrent_bias", "kernel", "input_bias")
    for name, t, n in zip(names, theoretical, numerical, strict=True):
        assert np.abs(n).max() > 1e-3, name  # the loss depends on every input
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7, err_msg=name)


def test_projecting_gradient_equals_the_projections_gradient(rng):
    """The same loss through x with the kernel and through xw = x·W + b_in, also when the
    forward ran without gates (the gradient then recomputes them)."""
    x, h0, u, b, kernel, b_in = projecting_inputs(rng, 4, 7, 6, 9)
    watched = [x, h0, u, b, kernel, b_in]
    for with_gates in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(watched)
            fused = gru_sequence(x, h0, u, b, kernel=kernel, input_bias=b_in,
                                 with_gates=with_gates, keep_cache=False)
            xw = tf.einsum("bti,ij->btj", x, kernel) + b_in
            plain = gru_sequence(xw, h0, u, b, with_gates=with_gates, keep_cache=False)
            losses = [tf.reduce_sum(tf.sin(o.h_seq)) + tf.reduce_sum(o.h_last ** 2)
                      for o in (fused, plain)]
        for got, want in zip(tape.gradient(losses[0], watched),
                             tape.gradient(losses[1], watched), strict=True):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gradients_nobody_asked_for_are_not_computed(rng, reset_after):
    """A tape that watches the weights but not x (a first layer's data) nor the biases
    gets every watched gradient right, against central differences of the oracle, and its
    graph computes nothing more: no d_x = d_xw·Wᵀ, and the weight gradients' matmuls
    without the column of ones that also sums a bias gradient when one is wanted."""
    batch, time, width, units = 3, 5, 4, 6
    values = projecting_inputs(rng, batch, time, width, units)
    names = ("x", "h0", "recurrent_kernel", "recurrent_bias", "kernel", "input_bias")
    cot = [rng.normal(size=o.shape) for o in
           gru_sequence(*values[:4], kernel=values[4], input_bias=values[5])[:5]]

    def loss_of(x, h0, u, b, kernel, b_in):
        out = gru_sequence(x, h0, u, b, reset_after=reset_after, kernel=kernel,
                           input_bias=b_in)
        return sum(tf.reduce_sum(w * o) for w, o in zip(cot, out[:5], strict=True))

    def traced(watch: tuple[int, ...]):
        @tf.function
        def grads():
            with tf.GradientTape() as tape:
                tape.watch([values[i] for i in watch])
                loss = loss_of(*values)
            return tape.gradient(loss, [values[i] for i in watch])

        graph = grads.get_concrete_function().graph
        shapes = sorted(tuple(op.outputs[0].shape.as_list()) for op in graph.get_operations()
                        if op.type in ("MatMul", "BatchMatMulV2", "Einsum"))
        return [g.numpy() for g in grads()], shapes

    def weight_grads(ones: int) -> list[tuple[int, int]]:
        # with reset_after, the bias sum is ones·d_hu: U's gradient pairs rows of h_seq
        recurrent = ([(units, 3 * units), *[(1, 3 * units)] * ones] if reset_after
                     else [(units, units), (units, 2 * units)])
        return [(width + ones, 3 * units), *recurrent]

    _, all_matmuls = traced(tuple(range(6)))
    assert all_matmuls == sorted([(batch, time, width), *weight_grads(1)])
    weights_only = (1, 2, 4)
    grads, matmuls = traced(weights_only)
    assert matmuls == sorted(weight_grads(0))
    for i, grad in zip(weights_only, grads, strict=True):
        direction = rng.normal(size=grad.shape)

        def along(eps, i=i, direction=direction):
            shifted = list(values)
            shifted[i] = values[i] + eps * direction
            xw = shifted[0].numpy() @ shifted[4].numpy() + shifted[5].numpy()
            ref = gru_sequence_reference(xw, *(v.numpy() for v in shifted[1:4]),
                                         reset_after=reset_after)
            outs = (ref.h_seq, ref.h_last, ref.update, ref.reset, ref.candidate)
            return sum(np.sum(w * o) for w, o in zip(cot, outs, strict=True))

        numeric = (along(1e-6) - along(-1e-6)) / 2e-6
        analytic = float(np.sum(grad * direction))
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), names[i]


def _ancestors(op: tf.Operation) -> set[tf.Operation]:
    seen: set[tf.Operation] = set()
    todo = [t.op for t in op.inputs] + list(op.control_inputs)
    while todo:
        o = todo.pop()
        if o not in seen:
            seen.add(o)
            todo += [t.op for t in o.inputs] + list(o.control_inputs)
    return seen


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_the_gradients_products_run_one_after_another(rng, reset_after, mask_kind):
    """The gradient's large products (U's and W's gradients, d_x, the bias sums) must not
    run side by side: each asks for every intra-op thread, and TF's inter-op threads running
    two at once made training steps up to 15% slower at random. In the graph, of any two
    of them one must wait for the other; the gradients stay right (central differences of
    the oracle)."""
    batch, time, width, units = 3, 6, 4, 5
    values = projecting_inputs(rng, batch, time, width, units)
    mask = random_mask(rng, batch, time, mask_kind)
    cot = [rng.normal(size=s) for s in [(batch, time, units), (batch, units)]
           + [(batch, time, units)] * 3]

    def loss_of(*v):
        out = gru_sequence(*v[:4], mask=mask, reset_after=reset_after, kernel=v[4],
                           input_bias=v[5])
        return sum(tf.reduce_sum(w * o) for w, o in zip(cot, out[:5], strict=True))

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_of(*values)
        return tape.gradient(loss, values)

    graph = grads.get_concrete_function().graph
    products = [op for op in graph.get_operations()
                if op.type in ("MatMul", "BatchMatMulV2", "Einsum")]
    assert len(products) >= 4  # U's gradient, its bias sum or second half, d_x, W's
    for i, a in enumerate(products):
        for b in products[i + 1:]:
            in_order = a in _ancestors(b) or b in _ancestors(a)
            assert in_order, f"{a.name} and {b.name} may run side by side"

    def oracle_loss(v):
        xw = v[0] @ v[4] + v[5]
        ref = gru_sequence_reference(xw, *v[1:4], mask=mask, reset_after=reset_after)
        outs = (ref.h_seq, ref.h_last, ref.update, ref.reset, ref.candidate)
        return sum(np.sum(w * o) for w, o in zip(cot, outs, strict=True))

    plain = [v.numpy() for v in values]
    for i, grad in enumerate(grads()):
        direction = rng.normal(size=grad.shape)
        shifted = [[v + eps * direction if j == i else v for j, v in enumerate(plain)]
                   for eps in (1e-6, -1e-6)]
        numeric = (oracle_loss(shifted[0]) - oracle_loss(shifted[1])) / 2e-6
        analytic = float(np.sum(grad.numpy() * direction))
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), i


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("watch", [(3,), (5,), (3, 5), (4,), (2, 3), (0, 3), (1, 4, 5)])
def test_any_subset_of_gradients_equals_the_full_tape(rng, reset_after, watch):
    """Whichever inputs a tape watches (x, h0, U, b, W, b_in: 0-5), their gradients are
    those of a tape that watches all six: the bias sums come from the weight matmuls'
    column of ones, or from ones·d when that matmul is skipped, and reset_after=False's
    two biases share one sum."""
    batch, time, width, units = 3, 7, 5, 6
    values = projecting_inputs(rng, batch, time, width, units)
    mask = tf.constant(random_mask(rng, batch, time, "holes"))
    cot = rng.normal(size=(batch, time, units))

    def grads(indices: tuple[int, ...]) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch([values[i] for i in indices])
            out = gru_sequence(*values[:4], mask=mask, reset_after=reset_after,
                               kernel=values[4], input_bias=values[5])
            loss = tf.reduce_sum(cot * out.h_seq) + tf.reduce_sum(out.candidate)
        return [g.numpy() for g in tape.gradient(loss, [values[i] for i in indices])]

    full = grads(tuple(range(6)))
    for i, grad in zip(watch, grads(watch), strict=True):
        np.testing.assert_allclose(grad, full[i], rtol=1e-12, atol=1e-12, err_msg=str(i))
        assert np.abs(grad).max() > 1e-3, i


def test_nan_in_one_row_of_x_stays_in_that_row(rng):
    x, h0, u, b, kernel, b_in = projecting_inputs(rng, 4, 6, 5, 8, np.float32)
    bad = x.numpy()
    bad[2, 1, 3] = np.nan
    out = gru_sequence(tf.constant(bad), h0, u, b, kernel=kernel, input_bias=b_in)
    h = out.h_seq.numpy()
    assert np.isnan(h[2, 1:]).all() and not np.isnan(h[2, 0]).any()
    assert not np.isnan(np.delete(h, 2, axis=0)).any()


@pytest.mark.parametrize("padding", [np.nan, np.inf])
def test_non_finite_padding_at_masked_steps_leaves_every_gradient_finite(rng, padding):
    """x at masked steps is never read: NaN or Inf padding there must not reach d_kernel
    (it would, as padding·0, for every row), and the gradients equal those with random
    padding."""
    batch, time, width, units = 4, 6, 3, 5
    x, h0, u, b, kernel, b_in = projecting_inputs(rng, batch, time, width, units)
    mask = random_mask(rng, batch, time, "right_padded")
    mask[0, -2:] = False
    padded = np.where(mask[..., None], x.numpy(), padding)

    def grads(inputs):
        args = [tf.constant(inputs), h0, u, b, kernel, b_in]
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = gru_sequence(args[0], h0, u, b, mask=mask, kernel=kernel, input_bias=b_in)
            loss = tf.reduce_sum(out.h_seq * 1.5) + tf.reduce_sum(out.update ** 2)
        return [g.numpy() for g in tape.gradient(loss, args)]

    with_padding, with_data = grads(padded), grads(x.numpy())
    for name, g, ref in zip(("x", "h0", "U", "b", "kernel", "b_in"), with_padding, with_data,
                            strict=True):
        valid = mask[..., None] if name == "x" else True
        assert np.isfinite(np.where(valid, g, 0)).all(), name
        np.testing.assert_allclose(np.where(valid, g, 0), np.where(valid, ref, 0), atol=1e-12,
                                   err_msg=name)
