"""Float64 gradient oracles for the op: central finite differences of the numpy reference
(gategru/reference.py), independent of the op's own backward pass.

A problem is a dict of named float64 arrays: ``inputs``, ``h0``, ``recurrent_kernel``,
``recurrent_bias`` and, for the projecting form, ``kernel`` and optionally ``input_bias``
(``inputs`` is then x, projected as x·kernel + input_bias; otherwise it is xw). A loss is a
weighted sum of the outputs with random weights (cotangents), so its gradient is the op's
vector-Jacobian product for those cotangents.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from gategru import gru_sequence
from gategru.reference import GruReference, gru_sequence_reference

OUTPUTS = ("h_seq", "h_last", "update", "reset", "candidate")
GATES = OUTPUTS[2:]
EPS = 1e-6  # central differences in float64: truncation ~EPS², rounding ~1e-16/EPS
LossFn = Callable[[dict[str, np.ndarray]], float]


def reference(args: dict[str, np.ndarray], mask: np.ndarray | None,
              reset_after: bool) -> GruReference:
    """The float64 oracle's outputs for a problem (projecting x itself in numpy)."""
    xw = np.asarray(args["inputs"], np.float64)
    if "kernel" in args:
        with np.errstate(invalid="ignore"):  # BLAS flags an ±Inf in x, though x·W is right
            xw = xw @ args["kernel"] + args.get("input_bias", 0.0)
    return gru_sequence_reference(xw, args["h0"], args["recurrent_kernel"],
                                  args["recurrent_bias"], mask, reset_after)


def cotangents(rng: np.random.Generator, batch: int, time: int, units: int,
               with_gates: bool = True) -> dict[str, np.ndarray]:
    """Random weights for h_seq, h_last and (with_gates) the three gates."""
    names = OUTPUTS if with_gates else OUTPUTS[:2]
    return {name: rng.normal(size=(batch, units) if name == "h_last" else (batch, time, units))
            for name in names}


def reference_loss(args: dict[str, np.ndarray], mask: np.ndarray | None, reset_after: bool,
                   cot: dict[str, np.ndarray]) -> float:
    ref = reference(args, mask, reset_after)
    return float(sum(np.sum(w * getattr(ref, name)) for name, w in cot.items()))


def op_gradients(args: dict[str, np.ndarray], mask: np.ndarray | None, reset_after: bool,
                 cot: dict[str, np.ndarray], dtype: tf.DType = tf.float64, **op_kwargs):
    """(outputs, {name: gradient}) of the cotangent-weighted loss through gru_sequence."""
    tensors = {name: tf.constant(value, dtype) for name, value in args.items()}
    with tf.GradientTape() as tape:
        tape.watch(list(tensors.values()))
        out = gru_sequence(tensors["inputs"], tensors["h0"], tensors["recurrent_kernel"],
                           tensors["recurrent_bias"], mask=mask, reset_after=reset_after,
                           kernel=tensors.get("kernel"), input_bias=tensors.get("input_bias"),
                           **op_kwargs)
        loss = tf.add_n([tf.reduce_sum(tf.constant(w, dtype) * getattr(out, name))
                         for name, w in cot.items()])
    grads = tape.gradient(loss, list(tensors.values()))
    result = {}
    for (name, value), grad in zip(tensors.items(), grads, strict=True):
        assert grad is not None, f"no gradient for {name}"
        assert grad.dtype == dtype and grad.shape == value.shape, (name, grad.dtype, grad.shape)
        result[name] = tf.cast(grad, tf.float64).numpy()
    return out, result


def _shifted(args: dict[str, np.ndarray], name: str, delta: np.ndarray) -> dict:
    return {**args, name: args[name] + delta}


def numeric_gradient(loss: LossFn, args: dict[str, np.ndarray], name: str,
                     eps: float = EPS) -> np.ndarray:
    """Every entry of d loss / d args[name] by central differences (small arrays only)."""
    grad = np.zeros_like(args[name], np.float64)
    for index in np.ndindex(*grad.shape):
        step = np.zeros_like(grad)
        step[index] = eps
        grad[index] = (loss(_shifted(args, name, step))
                       - loss(_shifted(args, name, -step))) / (2 * eps)
    return grad


def directional_derivative(loss: LossFn, args: dict[str, np.ndarray], name: str,
                           direction: np.ndarray, eps: float = EPS) -> float:
    return (loss(_shifted(args, name, eps * direction))
            - loss(_shifted(args, name, -eps * direction))) / (2 * eps)


def assert_gradients_match(loss: LossFn, args: dict[str, np.ndarray],
                           grads: dict[str, np.ndarray], rtol: float = 1e-6) -> None:
    """Each gradient entry by entry against central differences of ``loss``."""
    for name, grad in grads.items():
        numeric = numeric_gradient(loss, args, name)
        assert grad.shape == numeric.shape, name
        scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
        np.testing.assert_allclose(grad, numeric, rtol=rtol, atol=rtol * scale, err_msg=name)


def assert_directional_derivatives_match(loss: LossFn, args: dict[str, np.ndarray],
                                         grads: dict[str, np.ndarray],
                                         rng: np.random.Generator,
                                         rtol: float = 1e-6) -> None:
    """Each gradient along its own random direction: <grad, d> against the central
    difference of ``loss`` along d. A gradient wrong by δ (in norm) moves <grad, d> by about
    ‖δ‖, so the tolerance is relative to ‖grad‖, the typical size of <grad, d>."""
    for name, grad in grads.items():
        assert grad.shape == args[name].shape, name
        direction = rng.normal(size=grad.shape)
        analytic = float(np.sum(grad * direction))
        numeric = directional_derivative(loss, args, name, direction)
        scale = max(1.0, float(np.linalg.norm(grad)), abs(numeric))
        assert abs(analytic - numeric) <= rtol * scale, (name, analytic, numeric)
