"""Float64 numpy GRU with gates: the oracle the tests judge the fast op against.

Written for clarity, not speed: one explicit loop over time, Keras's math and gate order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GruReference:
    """Outputs of :func:`gru_reference`, all float64.

    h_seq: (B, T, H) outputs in processing order; a masked step repeats the previous
        output (0 before the first unmasked step).
    h_last: (B, H) final state.
    update, reset, candidate: (B, T, H) gates z, r and h̃; 0 at masked steps.
    """

    h_seq: np.ndarray
    h_last: np.ndarray
    update: np.ndarray
    reset: np.ndarray
    candidate: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def gru_sequence_reference(
    xw: np.ndarray,
    h0: np.ndarray,
    recurrent_kernel: np.ndarray,
    recurrent_bias: np.ndarray,
    mask: np.ndarray | None = None,
    reset_after: bool = True,
) -> GruReference:
    """The op's contract, step by step.

    xw: (B, T, 3H) input projections x·W + b_in, gate blocks [z | r | h].
    h0: (B, H) initial state.
    recurrent_kernel: (H, 3H).
    recurrent_bias: (3H,). With reset_after=False it is added to the pre-activations
        like an input bias.
    mask: (B, T) bool or None; False carries the state.
    """
    xw = np.asarray(xw, np.float64)
    u = np.asarray(recurrent_kernel, np.float64)
    b_rec = np.asarray(recurrent_bias, np.float64)
    batch, time, three_h = xw.shape
    units = three_h // 3
    if mask is None:
        mask = np.ones((batch, time), bool)
    mask = np.asarray(mask, bool)
    state = np.array(h0, np.float64)
    prev_out = np.zeros((batch, units))
    h_seq = np.zeros((batch, time, units))
    gates = {k: np.zeros((batch, time, units)) for k in ("z", "r", "hc")}
    for t in range(time):
        x = xw[:, t]
        x_z, x_r, x_h = x[:, :units], x[:, units : 2 * units], x[:, 2 * units :]
        if reset_after:
            hu = state @ u + b_rec
            z = _sigmoid(x_z + hu[:, :units])
            r = _sigmoid(x_r + hu[:, units : 2 * units])
            hc = np.tanh(x_h + r * hu[:, 2 * units :])
        else:
            hu = state @ u[:, : 2 * units] + b_rec[: 2 * units]
            z = _sigmoid(x_z + hu[:, :units])
            r = _sigmoid(x_r + hu[:, units:])
            hc = np.tanh(x_h + (r * state) @ u[:, 2 * units :] + b_rec[2 * units :])
        h = z * state + (1.0 - z) * hc
        m = mask[:, t, None]
        state = np.where(m, h, state)
        prev_out = np.where(m, h, prev_out)
        h_seq[:, t] = prev_out
        for name, value in (("z", z), ("r", r), ("hc", hc)):
            gates[name][:, t] = np.where(m, value, 0.0)
    return GruReference(h_seq, state, gates["z"], gates["r"], gates["hc"])


def split_keras_bias(
    bias: np.ndarray | None, units: int, reset_after: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Keras's GRU bias as (input bias, recurrent bias), each (3H,)."""
    zeros = np.zeros(3 * units)
    if bias is None:
        return zeros, zeros
    bias = np.asarray(bias, np.float64)
    if reset_after:
        return bias[0], bias[1]
    return bias, zeros


def gru_layer_reference(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None,
    h0: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    reset_after: bool = True,
    go_backwards: bool = False,
) -> GruReference:
    """A ``keras.layers.GRU`` forward pass from its weights (Keras's generic path).

    x: (B, T, I); kernel: (I, 3H); recurrent_kernel: (H, 3H);
    bias: (2, 3H) if reset_after else (3H,), or None for use_bias=False;
    h0: (B, H) or None (zeros); mask: (B, T) bool or None.
    Outputs come in processing order (reversed time with go_backwards, as Keras).
    """
    x = np.asarray(x, np.float64)
    units = recurrent_kernel.shape[0]
    b_in, b_rec = split_keras_bias(bias, units, reset_after)
    if go_backwards:
        x = x[:, ::-1]
        mask = None if mask is None else np.asarray(mask)[:, ::-1]
    xw = x @ np.asarray(kernel, np.float64) + b_in
    if h0 is None:
        h0 = np.zeros((x.shape[0], units))
    return gru_sequence_reference(xw, h0, recurrent_kernel, b_rec, mask, reset_after)
