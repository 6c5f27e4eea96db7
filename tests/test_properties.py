"""Property-based tests of the forward and backward ops over random shapes, configurations,
masks and dtypes, against the float64 oracle, including NaN, ±Inf and huge inputs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from grad_checks import (
    GATES,
    OUTPUTS,
    assert_directional_derivatives_match,
    cotangents,
    op_gradients,
    reference,
    reference_loss,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gategru import gru_sequence

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
# Absolute and relative tolerance against the oracle fed the same (rounded) inputs: float32
# and float64 accumulate a few roundings per step; float16 and bfloat16 store each output
# rounded (half an ulp: 2^-11 and 2^-8 of a value near 1, up to 2^-10 and 2^-7 for |h0|
# up to 4), over inputs rounded the same way, so a few ulps of slack.
TOL = {"float64": 1e-11, "float32": 5e-5, "float16": 4e-3, "bfloat16": 3e-2}
FLOATS = ("float32", "float64")
EXTREMES = (np.nan, np.inf, -np.inf, 1e30, -1e30)


@st.composite
def problems(draw: st.DrawFn, dtypes: tuple[str, ...] = FLOATS, min_size: int = 0) -> dict:
    """Shapes, mask, reset_after, form (xw, or x with kernel and maybe input_bias), dtype and
    float64 values (rounded to dtype: what the op gets is what the oracle gets)."""
    batch = draw(st.integers(min_size, 5))
    time = draw(st.integers(min_size, 7))
    units = draw(st.integers(1, 20))
    width = draw(st.one_of(st.none(), st.integers(1, 6)))  # None: the xw form
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = None
    if draw(st.booleans()):
        mask = rng.random((batch, time)) < draw(st.floats(0.0, 1.0))
    scale = draw(st.floats(0.1, 4.0))
    args = {
        "inputs": rng.normal(size=(batch, time, 3 * units if width is None else width)) * scale,
        "h0": rng.normal(size=(batch, units)),
        "recurrent_kernel": rng.normal(size=(units, 3 * units)) / np.sqrt(units),
        "recurrent_bias": rng.normal(size=3 * units),
    }
    if width is not None:
        args["kernel"] = rng.normal(size=(width, 3 * units)) / np.sqrt(width)
        if draw(st.booleans()):
            args["input_bias"] = rng.normal(size=3 * units) * 0.5
    dtype = draw(st.sampled_from(dtypes))
    return dict(
        args={name: rounded(value, dtype) for name, value in args.items()},
        mask=mask,
        reset_after=draw(st.booleans()),
        dtype=dtype,
        rng=rng,
    )


def rounded(value: np.ndarray, dtype: str) -> np.ndarray:
    return tf.cast(tf.cast(value, dtype), tf.float64).numpy()


def run(p: dict, args: dict | None = None, **op_kwargs):
    args = p["args"] if args is None else args
    t = {name: tf.cast(value, p["dtype"]) for name, value in args.items()}
    return gru_sequence(t["inputs"], t["h0"], t["recurrent_kernel"], t["recurrent_bias"],
                        mask=p["mask"], reset_after=p["reset_after"], kernel=t.get("kernel"),
                        input_bias=t.get("input_bias"), **op_kwargs)


def rows(args: dict, mask: np.ndarray | None, keep: list[int]) -> tuple[dict, np.ndarray | None]:
    """The problem restricted to the batch rows `keep`."""
    per_row = ("inputs", "h0")
    sub = {name: value[keep] if name in per_row else value for name, value in args.items()}
    return sub, None if mask is None else mask[keep]


def inject(p: dict, value: float) -> tuple[dict, int]:
    """A copy of the arguments with one random input entry set to `value`, and its row."""
    rng = p["rng"]
    args = {**p["args"], "inputs": p["args"]["inputs"].copy()}
    shape = args["inputs"].shape
    at = (int(rng.integers(shape[0])), int(rng.integers(shape[1])), int(rng.integers(shape[2])))
    args["inputs"][at] = value
    p["injected_at"] = at
    return args, at[0]


@SETTINGS
@given(problems(dtypes=("float32", "float64", "float16", "bfloat16")), st.booleans())
def test_forward_matches_oracle(p, with_gates):
    out = run(p, with_gates=with_gates)
    ref = reference(p["args"], p["mask"], p["reset_after"])
    tol = TOL[p["dtype"]]
    for name in OUTPUTS:
        got = getattr(out, name)
        if name in GATES and not with_gates:
            assert got is None, name
            continue
        assert got.dtype == p["dtype"] and got.shape == getattr(ref, name).shape, name
        np.testing.assert_allclose(tf.cast(got, tf.float64), getattr(ref, name), atol=tol,
                                   rtol=tol, err_msg=name)


@SETTINGS
@given(problems(dtypes=("float64",)), st.booleans(), st.booleans())
def test_backward_matches_directional_derivatives(p, with_gates, keep_cache):
    """The gradient of a loss on h_seq, h_last and (with_gates) the three gates, w.r.t.
    every input, each along its own random direction, against central differences of the
    float64 oracle (float64 throughout: finite differences need the precision)."""
    args, mask, reset_after, rng = p["args"], p["mask"], p["reset_after"], p["rng"]
    batch, time = args["inputs"].shape[:2]
    cot = cotangents(rng, batch, time, args["h0"].shape[1], with_gates)
    _, grads = op_gradients(args, mask, reset_after, cot, with_gates=with_gates,
                            keep_cache=keep_cache)
    assert set(grads) == set(args)
    assert_directional_derivatives_match(
        lambda a: reference_loss(a, mask, reset_after, cot), args, grads, rng)


@SETTINGS
@given(problems(min_size=1), st.sampled_from(EXTREMES))
def test_non_finite_and_huge_inputs_stay_in_their_row(p, value):
    """Rows without the value match the oracle run on those rows alone; ±Inf and ±1e30
    saturate cleanly (gates in [0, 1], candidate in [-1, 1], everything finite) and match
    the oracle, which saturates too; NaN shows exactly where the oracle's NaN does."""
    args, row = inject(p, value)
    out = run(p, args)
    batch = args["inputs"].shape[0]
    clean = [b for b in range(batch) if b != row]
    tol = TOL[p["dtype"]]
    ref_clean = reference(*rows(args, p["mask"], clean), p["reset_after"])
    ref_row = reference(*rows(args, p["mask"], [row]), p["reset_after"])
    for name in OUTPUTS:
        got = tf.cast(getattr(out, name), tf.float64).numpy()
        assert np.isfinite(got[clean]).all(), name
        np.testing.assert_allclose(got[clean], getattr(ref_clean, name), atol=tol, rtol=tol,
                                   err_msg=name)
        if not np.isnan(value):
            assert np.isfinite(got[row]).all(), name
        # assert_allclose's equal_nan: NaN exactly where the oracle has NaN
        np.testing.assert_allclose(got[[row]], getattr(ref_row, name), atol=tol, rtol=tol,
                                   err_msg=f"row {row}: {name}")
    for name in ("update", "reset"):
        gate = tf.cast(getattr(out, name), tf.float64).numpy()
        assert ((gate >= 0) & (gate <= 1) | np.isnan(gate)).all(), name
    candidate = tf.cast(out.candidate, tf.float64).numpy()
    assert ((candidate >= -1) & (candidate <= 1) | np.isnan(candidate)).all()


@SETTINGS
@given(problems(min_size=1), st.sampled_from(EXTREMES))
def test_non_finite_input_stays_in_its_row_in_the_backward(p, value):
    """With a NaN, ±Inf or ±1e30 in one row, the other rows' gradients (inputs, h0) are
    finite and equal the gradients computed without that row. Where the oracle's loss stays
    finite (±Inf and ±1e30 saturate; a NaN at a masked step is never read), every gradient
    is finite and matches the oracle's directional derivatives (float64)."""
    args, row = inject(p, value)
    mask, reset_after, rng, dtype = p["mask"], p["reset_after"], p["rng"], p["dtype"]
    batch, time = args["inputs"].shape[:2]
    cot = cotangents(rng, batch, time, args["h0"].shape[1])
    _, grads = op_gradients(args, mask, reset_after, cot, dtype=tf.as_dtype(dtype))
    clean = [b for b in range(batch) if b != row]
    if clean:
        sub_args, sub_mask = rows(args, mask, clean)
        sub_cot = {name: w[clean] for name, w in cot.items()}
        _, sub_grads = op_gradients(sub_args, sub_mask, reset_after, sub_cot,
                                    dtype=tf.as_dtype(dtype))
        tol = TOL[dtype]
        for name in ("inputs", "h0"):
            assert np.isfinite(grads[name][clean]).all(), name
            np.testing.assert_allclose(grads[name][clean], sub_grads[name], rtol=tol,
                                       atol=tol, err_msg=name)
    if dtype != "float64" or not np.isfinite(reference_loss(args, mask, reset_after, cot)):
        return  # a NaN that reached the outputs: only the other rows' gradients are defined
    row_step = p["injected_at"][:2]
    if not np.isfinite(value) and "kernel" in grads and (mask is None or mask[row_step]):
        # d kernel = xᵀ·d xw with x non-finite at a step that runs: ∞·0 or NaN·0 terms.
        # At a masked step the gradient zeroes x first, so there d kernel stays finite.
        del grads["kernel"]
    for name, grad in grads.items():
        assert np.isfinite(grad).all(), name
    assert_directional_derivatives_match(
        lambda a: reference_loss(a, mask, reset_after, cot), args, grads, rng)
