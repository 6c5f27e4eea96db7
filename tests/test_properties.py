"""Property-based tests of the forward and backward ops over random shapes, configurations,
masks and dtypes, against the float64 oracle, including NaN and ±Inf inputs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gategru import gru_sequence
from gategru.reference import gru_sequence_reference

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw: st.DrawFn) -> dict:
    batch = draw(st.integers(0, 5))
    time = draw(st.integers(0, 7))
    units = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = None
    if draw(st.booleans()):
        mask = rng.random((batch, time)) < draw(st.floats(0.0, 1.0))
    return dict(
        xw=rng.normal(size=(batch, time, 3 * units)) * draw(st.floats(0.1, 4.0)),
        h0=rng.normal(size=(batch, units)),
        recurrent_kernel=rng.normal(size=(units, 3 * units)) / np.sqrt(units),
        recurrent_bias=rng.normal(size=3 * units),
        mask=mask,
        reset_after=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        rng=rng,
    )


def run(p: dict, xw: np.ndarray | None = None):
    dtype = p["dtype"]
    args = [np.asarray(a, dtype) for a in
            (p["xw"] if xw is None else xw, p["h0"], p["recurrent_kernel"], p["recurrent_bias"])]
    return gru_sequence(*args, mask=p["mask"], reset_after=p["reset_after"])


@SETTINGS
@given(problems())
def test_forward_matches_oracle(p):
    out = run(p)
    ref = gru_sequence_reference(p["xw"], p["h0"], p["recurrent_kernel"], p["recurrent_bias"],
                                 p["mask"], p["reset_after"])
    tol = 1e-11 if p["dtype"] == np.float64 else 5e-5
    for name in ("h_seq", "h_last", "update", "reset", "candidate"):
        np.testing.assert_allclose(getattr(out, name), getattr(ref, name), atol=tol, rtol=tol)


@SETTINGS
@given(problems())
def test_backward_matches_directional_derivative(p):
    rng = p["rng"]  # float64 throughout: finite differences need the precision
    xw = tf.constant(p["xw"])
    h0 = tf.constant(p["h0"])
    weights = [rng.normal(size=s) for s in [p["xw"].shape[:2] + (p["h0"].shape[1],)] * 4]
    weights.insert(1, rng.normal(size=p["h0"].shape))

    def loss_np(xw_: np.ndarray, h0_: np.ndarray) -> float:
        r = gru_sequence_reference(xw_, h0_, p["recurrent_kernel"], p["recurrent_bias"],
                                   p["mask"], p["reset_after"])
        parts = (r.h_seq, r.h_last, r.update, r.reset, r.candidate)
        return float(sum((w * v).sum() for w, v in zip(weights, parts, strict=True)))

    with tf.GradientTape() as tape:
        tape.watch([xw, h0])
        out = gru_sequence(xw, h0, p["recurrent_kernel"], p["recurrent_bias"], mask=p["mask"],
                           reset_after=p["reset_after"])
        parts = (out.h_seq, out.h_last, out.update, out.reset, out.candidate)
        loss = sum(tf.reduce_sum(w * v) for w, v in zip(weights, parts, strict=True))
    d_xw, d_h0 = tape.gradient(loss, [xw, h0])
    dx, dh = rng.normal(size=p["xw"].shape), rng.normal(size=p["h0"].shape)
    eps = 1e-6
    numeric = (loss_np(p["xw"] + eps * dx, p["h0"] + eps * dh)
               - loss_np(p["xw"] - eps * dx, p["h0"] - eps * dh)) / (2 * eps)
    analytic = float(np.sum(d_xw * dx) + np.sum(d_h0 * dh))
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


@SETTINGS
@given(problems(), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30]))
def test_non_finite_and_huge_inputs_stay_in_their_row(p, value):
    batch, time = p["xw"].shape[:2]
    if batch == 0 or time == 0:
        return
    rng = p["rng"]
    row = int(rng.integers(batch))
    xw = p["xw"].copy()
    xw[row, int(rng.integers(time)), int(rng.integers(xw.shape[2]))] = value
    out = run(p, xw)
    clean = [b for b in range(batch) if b != row]
    for name in ("h_seq", "h_last", "update", "reset", "candidate"):
        values = getattr(out, name).numpy()
        assert np.isfinite(values[clean]).all(), name
        if not np.isnan(value):  # ±Inf and huge values saturate: the row stays finite
            assert np.isfinite(values[row]).all(), name
