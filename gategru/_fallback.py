"""Per-step GRU with gates, for what the fused op does not cover: non-default activations
and recurrent dropout in training. Same math as Keras's GRUCell (implementation 1 when
recurrent dropout is on, as Keras switches to it), so seeds give Keras's dropout masks.
"""

from __future__ import annotations

import tensorflow as tf


def _masks(mask: object, count: int, dtype: tf.DType) -> list:
    """Keras caches one dropout mask, or a list of three with implementation 1."""
    if mask is None:
        return [None] * count
    masks = mask if isinstance(mask, (list, tuple)) else [mask] * count
    return [tf.cast(m, dtype) for m in masks]


def gru_loop_with_gates(cell, x, h0, mask, training, dtype):  # noqa: ANN001, ANN201
    """(h_seq, h_last, gates) for x (B,T,I) in processing order, like the fused op."""
    units = cell.units
    kernel = tf.cast(cell.kernel, dtype)
    u = tf.cast(cell.recurrent_kernel, dtype)
    zeros = tf.zeros([3 * units], dtype)
    if not cell.use_bias:
        b_in, b_rec = zeros, zeros
    elif cell.reset_after:
        b_in, b_rec = tf.cast(cell.bias[0], dtype), tf.cast(cell.bias[1], dtype)
    else:
        b_in, b_rec = tf.cast(cell.bias, dtype), zeros
    on = bool(training)
    step_like = tf.zeros_like(x[:, :1])  # only its shape matters; works with 0 timesteps
    dp = _masks(cell.get_dropout_mask(step_like) if on and cell.dropout > 0 else None, 3, dtype)
    rdp = _masks(
        cell.get_recurrent_dropout_mask(h0) if on and cell.recurrent_dropout > 0 else None,
        3,
        dtype,
    )

    def block(t: tf.Tensor, g: int) -> tf.Tensor:
        return t[..., g * units : (g + 1) * units]

    # Input projections of all steps at once, one per gate so each gets its dropout mask.
    xs = [
        tf.einsum("bti,ij->btj", x if dp[g] is None else x * dp[g][:, None], block(kernel, g))
        + block(b_in, g)
        for g in range(3)
    ]
    time_major = [tf.transpose(v, [1, 0, 2]) for v in xs]
    step_mask = (
        tf.ones(tf.shape(x)[1::-1], tf.bool) if mask is None else tf.transpose(mask, [1, 0])
    )

    def step(carry: tuple, inputs: tuple) -> tuple:
        h_tm1, prev_out = carry[0], carry[1]
        x_z, x_r, x_h, m = inputs
        hz, hr, hh = (h_tm1 if rdp[g] is None else h_tm1 * rdp[g] for g in range(3))
        z = cell.recurrent_activation(x_z + hz @ block(u, 0) + block(b_rec, 0))
        r = cell.recurrent_activation(x_r + hr @ block(u, 1) + block(b_rec, 1))
        if cell.reset_after:
            rec_h = r * (hh @ block(u, 2) + block(b_rec, 2))
        else:
            rec_h = (r * hh) @ block(u, 2)
        hc = cell.activation(x_h + rec_h)
        h = z * h_tm1 + (1 - z) * hc
        m = m[:, None]
        zero = tf.zeros_like(h)
        return (
            tf.where(m, h, h_tm1),
            tf.where(m, h, prev_out),
            tf.where(m, z, zero),
            tf.where(m, r, zero),
            tf.where(m, hc, zero),
        )

    init = (h0, tf.zeros_like(h0), tf.zeros_like(h0), tf.zeros_like(h0), tf.zeros_like(h0))
    states, outs, z, r, hc = (
        tf.transpose(v, [1, 0, 2]) for v in tf.scan(step, (*time_major, step_mask), init)
    )
    h_last = states[:, -1] if x.shape[1] != 0 else h0
    return outs, h_last, {"update": z, "reset": r, "candidate": hc}
