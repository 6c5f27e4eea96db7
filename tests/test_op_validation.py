"""Every input rule of both ops: a clear InvalidArgumentError naming the input and the
expected and actual shapes (eager calls skip shape functions, so the kernels speak)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gategru.ops import gru_sequence, load_library

B, T, H = 2, 3, 4


I = 5  # noqa: E741  (input width of the projecting form)
NONE = tf.zeros([0])  # kernel and input_bias when the inputs are the projections


def forward_inputs(rng):
    return dict(
        inputs=tf.constant(rng.normal(size=(B, T, 3 * H)), tf.float32),
        h0=tf.constant(rng.normal(size=(B, H)), tf.float32),
        recurrent_kernel=tf.constant(rng.normal(size=(H, 3 * H)), tf.float32),
        recurrent_bias=tf.constant(rng.normal(size=(3 * H,)), tf.float32),
        mask=tf.constant(rng.random((B, T)) > 0.3),
        kernel=NONE,
        input_bias=NONE,
    )


def projecting_inputs(rng):
    return dict(
        forward_inputs(rng),
        inputs=tf.constant(rng.normal(size=(B, T, I)), tf.float32),
        kernel=tf.constant(rng.normal(size=(I, 3 * H)), tf.float32),
        input_bias=tf.constant(rng.normal(size=(3 * H,)), tf.float32),
    )


FORWARD_RULES = [
    ("inputs", tf.zeros([B, T]),
     r"`inputs` \(the projections xw, no `kernel` given\) must have shape \(batch, timesteps, "
     r"3\*units\).*got \(2, 3\)"),
    ("inputs", tf.zeros([B, T, 3 * H + 1]), r"`inputs` \(the projections.*got \(2, 3, 13\)"),
    ("input_bias", tf.zeros([3 * H]),
     r"`input_bias` must have shape \(0,\) without `kernel` \(add it to xw\), got \(12,\)"),
    ("h0", tf.zeros([B + 1, H]), r"`h0` must have shape \(2, 4\), got \(3, 4\)"),
    ("h0", tf.zeros([B, H, 1]), r"`h0` must have shape \(2, 4\), got \(2, 4, 1\)"),
    ("recurrent_kernel", tf.zeros([H, 3 * H + 3]),
     r"`recurrent_kernel` must have shape \(units, 3\*units\)"),
    ("recurrent_kernel", tf.zeros([3 * H]), r"`recurrent_kernel` must have shape.*got \(12,\)"),
    ("recurrent_bias", tf.zeros([2, 3 * H]),
     r"`recurrent_bias` must have shape \(12,\), got \(2, 12\)"),
    ("mask", tf.ones([B, T + 1], tf.bool), r"`mask` must have shape \(2, 3\), got \(2, 4\)"),
    ("mask", tf.ones([B * T], tf.bool), r"`mask` must have shape \(2, 3\), got \(6,\)"),
    # only an all-zero shape means "no mask": an empty tensor of another shape is an error
    ("mask", tf.ones([B, T, 0], tf.bool), r"`mask` must have shape \(2, 3\), got \(2, 3, 0\)"),
    ("mask", tf.ones([B, 0], tf.bool), r"`mask` must have shape \(2, 3\), got \(2, 0\)"),
    ("mask", tf.ones([0, 0], tf.bool), r"`mask` must have shape \(2, 3\), got \(0, 0\)"),
    ("kernel", tf.zeros([0, 0]), r"`kernel` must have shape \(input_width, 3\*units\).*"
                                 r"input_width >= 1.*got \(0, 0\)"),
    ("recurrent_kernel", tf.zeros([0, 0]),
     r"`recurrent_kernel` must have shape \(units, 3\*units\) with units >= 1, got \(0, 0\)"),
]


@pytest.mark.parametrize(("name", "value", "message"), FORWARD_RULES)
def test_forward_rules(rng, name, value, message):
    inputs = dict(forward_inputs(rng), **{name: value})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        load_library().gate_gru_forward(**inputs)


PROJECTING_RULES = [
    ("inputs", tf.zeros([B, T, I + 1]),
     r"`inputs` must have shape \(batch, timesteps, input_width\) = \(batch, timesteps, 5\) "
     r"for kernel \(5, 12\), got \(2, 3, 6\)"),
    ("inputs", tf.zeros([B * T, I]), r"`inputs` must have shape.*got \(6, 5\)"),
    ("kernel", tf.zeros([I, 3 * H + 1]),
     r"`kernel` must have shape \(input_width, 3\*units\) = \(input_width, 12\).*got \(5, 13\)"),
    ("kernel", tf.zeros([3 * H]), r"`kernel` must have shape.*got \(12,\)"),
    ("kernel", tf.zeros([0, 3 * H]), r"`kernel` must have shape.*input_width >= 1.*got \(0, 12\)"),
    ("input_bias", tf.zeros([3 * H + 1]), r"`input_bias` must have shape \(12,\), got \(13,\)"),
    ("input_bias", tf.zeros([1, 3 * H]), r"`input_bias` must have shape \(12,\), got \(1, 12\)"),
    ("h0", tf.zeros([B + 1, H]), r"`h0` must have shape \(2, 4\), got \(3, 4\)"),
]


@pytest.mark.parametrize(("name", "value", "message"), PROJECTING_RULES)
def test_projecting_forward_rules(rng, name, value, message):
    inputs = dict(projecting_inputs(rng), **{name: value})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        load_library().gate_gru_forward(**inputs)


def test_projecting_shape_function_merges_the_widths(rng):
    """In a graph with partly known shapes, the shape function already rejects a kernel
    that does not fit x, and names the argument."""
    good = projecting_inputs(rng)
    spec = {k: tf.TensorSpec([None] * v.shape.rank, v.dtype) for k, v in good.items()}
    spec["inputs"] = tf.TensorSpec([None, None, I + 1], tf.float32)
    spec["kernel"] = tf.TensorSpec([I, 3 * H], tf.float32)
    spec["recurrent_kernel"] = tf.TensorSpec([H, 3 * H], tf.float32)
    fn = tf.function(lambda **kw: load_library().gate_gru_forward(**kw))
    with pytest.raises(ValueError, match=r"`inputs` must have shape \(batch, timesteps, "
                                         r"input_width\) \(Dimensions must be equal"):
        fn.get_concrete_function(**spec)
    with pytest.raises(ValueError, match=r"`h0` must have shape \(batch, units\)"):
        fn.get_concrete_function(**{**spec, "inputs": tf.TensorSpec([None, None, I]),
                                    "h0": tf.TensorSpec([None, H + 1])})
    out = fn.get_concrete_function(**{**spec, "inputs": tf.TensorSpec([None, None, I])})
    assert out.structured_outputs.h_seq.shape.as_list() == [None, None, H]


def test_graph_errors_with_known_shapes_match_the_kernels(rng):
    """A tf.function with fully known shapes fails while tracing, with the kernels' own
    message for both ops."""
    fwd = tf.function(lambda kw: load_library().gate_gru_forward(**kw))
    with pytest.raises(ValueError, match=r"`h0` must have shape \(2, 4\), got \(2, 5\)"):
        fwd(dict(forward_inputs(rng), h0=tf.zeros([B, H + 1])))
    with pytest.raises(ValueError, match=r"`kernel` must have shape \(input_width, 3\*units\)"
                                         r" = \(input_width, 12\).*got \(5, 13\)"):
        fwd(dict(projecting_inputs(rng), kernel=tf.zeros([I, 3 * H + 1])))
    bwd = tf.function(lambda kw: load_library().gate_gru_backward(**kw))
    with pytest.raises(ValueError, match=r"`d_reset` must have shape \(2, 3, 4\), got "
                                         r"\(2, 3, 2\)"):
        bwd(dict(backward_inputs(rng), d_reset=tf.zeros([B, T, 2])))
    # and a valid call traces to the static output shapes
    out = fwd.get_concrete_function(forward_inputs(rng)).structured_outputs
    assert out.h_seq.shape.as_list() == [B, T, H] and out.hu_candidate.shape == [B, T, H]


def test_forward_dtype_must_match_and_be_supported(rng):
    inputs = forward_inputs(rng)
    lib = load_library()
    with pytest.raises(tf.errors.InvalidArgumentError, match="input #1.*float.*double"):
        lib.gate_gru_forward(**dict(inputs, h0=tf.cast(inputs["h0"], tf.float64)))
    ints = {k: tf.cast(v, tf.int32) if v.dtype == tf.float32 else v for k, v in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="int32"):
        lib.gate_gru_forward(**ints)
    with pytest.raises(tf.errors.InvalidArgumentError, match="input #4.*bool"):
        lib.gate_gru_forward(**dict(inputs, mask=tf.ones([B, T])))


def test_public_function_names_the_argument_with_a_bad_dtype(rng):
    inputs = {k: v for k, v in forward_inputs(rng).items() if k not in ("kernel", "input_bias")}
    with pytest.raises(TypeError, match=r"`h0` has dtype float64.*`inputs` is float32"):
        gru_sequence(**dict(inputs, h0=tf.cast(inputs["h0"], tf.float64)))
    with pytest.raises(TypeError, match="`inputs` must be float16, bfloat16, float32 or "
                                       "float64, got int32"):
        gru_sequence(**{k: tf.cast(v, tf.int32) if v.dtype == tf.float32 else v
                        for k, v in inputs.items()})
    projecting = projecting_inputs(rng)
    with pytest.raises(TypeError, match=r"`kernel` has dtype float64.*`inputs` is float32"):
        gru_sequence(**dict(projecting, kernel=tf.cast(projecting["kernel"], tf.float64)))
    with pytest.raises(ValueError, match="`input_bias` needs `kernel`"):
        gru_sequence(**dict(inputs, input_bias=projecting["input_bias"]))


@pytest.mark.parametrize("attr", ["reset_after", "with_gates", "keep_cache"])
def test_forward_attribute_values_are_checked(rng, attr):
    with pytest.raises((TypeError, ValueError), match=f"bool.*'{attr}'|'{attr}'.*bool"):
        load_library().gate_gru_forward(**forward_inputs(rng), **{attr: "yes"})


def test_backward_attribute_and_dtypes_are_checked(rng):
    inputs = backward_inputs(rng)
    lib = load_library()
    with pytest.raises((TypeError, ValueError), match="bool.*'reset_after'|'reset_after'.*bool"):
        lib.gate_gru_backward(**dict(inputs, reset_after="no"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input #3.*float.*double"):
        lib.gate_gru_backward(**dict(inputs, h_seq=tf.cast(inputs["h_seq"], tf.float64)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input #2.*bool"):
        lib.gate_gru_backward(**dict(inputs, mask=tf.ones([B, T])))
    ints = {k: tf.cast(v, tf.int32) if getattr(v, "dtype", None) == tf.float32 else v
            for k, v in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="int32"):
        lib.gate_gru_backward(**ints)


def backward_inputs(rng, reset_after=True):
    fwd = forward_inputs(rng)
    out = load_library().gate_gru_forward(**fwd, reset_after=reset_after)
    seq = tf.constant(rng.normal(size=(B, T, H)), tf.float32)
    return dict(
        h0=fwd["h0"], recurrent_kernel=fwd["recurrent_kernel"], mask=fwd["mask"],
        h_seq=out.h_seq, update=out.update, reset=out.reset, candidate=out.candidate,
        hu_candidate=out.hu_candidate, d_h_seq=seq,
        d_h_last=tf.constant(rng.normal(size=(B, H)), tf.float32),
        d_update=seq, d_reset=seq, d_candidate=seq, reset_after=reset_after,
    )


BACKWARD_RULES = [
    ("h_seq", tf.zeros([B, T]),
     r"`h_seq` must have shape \(batch, timesteps, units\) with units >= 1, got \(2, 3\)"),
    ("h_seq", tf.zeros([B, T, 0]), r"`h_seq` must have shape.*units >= 1, got \(2, 3, 0\)"),
    ("recurrent_kernel", tf.zeros([H, 3 * H, 1]),
     r"`recurrent_kernel` must have rank 2, got \(4, 12, 1\)"),
    ("recurrent_kernel", tf.zeros([H + 1, 3 * H]),
     r"`recurrent_kernel` must have shape \(4, 12\), got \(5, 12\)"),
    ("h0", tf.zeros([B, H + 1]), r"`h0` must have shape \(2, 4\), got \(2, 5\)"),
    ("mask", tf.ones([T, B], tf.bool), r"`mask` must have shape \(2, 3\), got \(3, 2\)"),
    # only an all-zero shape means "no mask": an empty tensor of another shape is an error
    ("mask", tf.ones([B, T, 0], tf.bool), r"`mask` must have shape \(2, 3\), got \(2, 3, 0\)"),
    ("mask", tf.ones([0, 0], tf.bool), r"`mask` must have shape \(2, 3\), got \(0, 0\)"),
    ("update", tf.zeros([B, T, H + 1]), r"`update` must have shape \(2, 3, 4\), got \(2, 3, 5\)"),
    ("reset", tf.zeros([B, T + 1, H]), r"`reset` must have shape \(2, 3, 4\), got \(2, 4, 4\)"),
    ("candidate", tf.zeros([B, T, 1]), r"`candidate` must have shape \(2, 3, 4\), got \(2, 3, 1\)"),
    ("hu_candidate", tf.zeros([0, 0, 0]),
     r"`hu_candidate` must have shape \(2, 3, 4\), got \(0, 0, 0\)"),
    ("d_h_seq", tf.zeros([B, T]), r"`d_h_seq` must have shape \(2, 3, 4\), got \(2, 3\)"),
    ("d_h_last", tf.zeros([B]), r"`d_h_last` must have shape \(2, 4\), got \(2,\)"),
    ("d_update", tf.zeros([1, 1, 1]), r"`d_update` must have shape \(2, 3, 4\), got \(1, 1, 1\)"),
    ("d_update", tf.zeros([B, 0, H]), r"`d_update` must have shape \(2, 3, 4\), got \(2, 0, 4\)"),
    ("d_reset", tf.zeros([B, T, 2]), r"`d_reset` must have shape \(2, 3, 4\), got \(2, 3, 2\)"),
    ("d_candidate", tf.zeros([B, T + 2, H]),
     r"`d_candidate` must have shape \(2, 3, 4\), got \(2, 5, 4\)"),
]


@pytest.mark.parametrize(("name", "value", "message"), BACKWARD_RULES)
def test_backward_rules(rng, name, value, message):
    inputs = dict(backward_inputs(rng), **{name: value})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        load_library().gate_gru_backward(**inputs)


def test_backward_accepts_absent_gate_gradients(rng):
    inputs = backward_inputs(rng, reset_after=False)
    empty = tf.zeros([0, 0, 0])
    full = load_library().gate_gru_backward(**dict(inputs, d_update=inputs["d_h_seq"] * 0,
                                                   d_reset=inputs["d_h_seq"] * 0,
                                                   d_candidate=inputs["d_h_seq"] * 0,
                                                   hu_candidate=empty))
    absent = load_library().gate_gru_backward(**dict(inputs, d_update=empty, d_reset=empty,
                                                     d_candidate=empty, hu_candidate=empty))
    np.testing.assert_array_equal(full.d_xw, absent.d_xw)
    assert np.abs(absent.d_xw.numpy()).sum() > 0


def test_backward_without_reset_after_checks_a_given_hu_candidate(rng):
    """hu_candidate is optional with reset_after=False; given, it must still fit."""
    inputs = backward_inputs(rng, reset_after=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`hu_candidate` must have shape \(2, 3, 4\), got \(2, 3, 5\)"):
        load_library().gate_gru_backward(**dict(inputs, hu_candidate=tf.zeros([B, T, H + 1])))


def test_unknown_kernel_rank_is_not_rejected_while_tracing(rng):
    """With the kernel's rank unknown, either form is possible: the shape function merges
    neither form's widths, and the op decides at run time."""
    good = forward_inputs(rng)
    spec = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in good.items()}
    spec["kernel"] = tf.TensorSpec(None, tf.float32)
    fn = tf.function(lambda **kw: load_library().gate_gru_forward(**kw).h_seq)
    concrete = fn.get_concrete_function(**spec)
    np.testing.assert_array_equal(concrete(**good), load_library().gate_gru_forward(**good).h_seq)


def test_gradient_needs_static_ranks_and_gru_sequence_sets_them(rng):
    """A mask of unknown rank: gru_sequence pins it to rank 2, so its gradient matches eager
    mode; the raw op's gradient refuses to guess the form."""
    inputs = forward_inputs(rng)
    args = [inputs[k] for k in ("inputs", "h0", "recurrent_kernel", "recurrent_bias")]

    def grads(mask, *tensors):
        with tf.GradientTape() as tape:
            tape.watch(list(tensors))
            loss = tf.reduce_sum(gru_sequence(*tensors, mask=mask).h_seq ** 2)
        return tape.gradient(loss, list(tensors))

    specs = [tf.TensorSpec(None, tf.bool)] + [tf.TensorSpec(a.shape, a.dtype) for a in args]
    traced = tf.function(grads, input_signature=specs)(inputs["mask"], *args)
    for got, want in zip(traced, grads(inputs["mask"], *args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.bool)])
    def raw(mask):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = load_library().gate_gru_forward(**dict(inputs, mask=mask))
            loss = tf.reduce_sum(out.h_seq)
        return tape.gradient(loss, args)

    with pytest.raises(ValueError, match="static ranks of `mask` and `kernel`"):
        raw(inputs["mask"])
