"""cpu_bench.py's TensorFlow variants: GateGRU with and without gates, keras.layers.GRU, a
Keras RNN over a cell that returns the gates, and keras.layers.GRU plus a batched recompute
of the gates, all with the same weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from cpu_bench_timing import Bench, timed_loop

import gategru


def _gates(cell: keras.layers.GRUCell, xw: tf.Tensor, h_prev: tf.Tensor) -> tuple:
    """z, r, h̃ from the input projection x·W (no bias yet) and the previous state, with the
    cell's own reset_after and biases (Keras's math)."""
    if cell.reset_after:
        xz, xr, xh = tf.split(xw + cell.bias[0], 3, axis=-1)
        hz, hr, hh = tf.split(tf.matmul(h_prev, cell.recurrent_kernel) + cell.bias[1], 3,
                              axis=-1)
        z, r = tf.sigmoid(xz + hz), tf.sigmoid(xr + hr)
        return z, r, tf.tanh(xh + r * hh)
    xz, xr, xh = tf.split(xw + cell.bias, 3, axis=-1)
    uz, ur, uh = tf.split(cell.recurrent_kernel, 3, axis=-1)
    z = tf.sigmoid(xz + tf.matmul(h_prev, uz))
    r = tf.sigmoid(xr + tf.matmul(h_prev, ur))
    return z, r, tf.tanh(xh + tf.matmul(r * h_prev, uh))


class GatesGRUCell(keras.layers.GRUCell):
    """The seed approach: a GRUCell whose per-step output is concat[h, z, r, h̃]."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.output_size = 4 * units

    def call(self, inputs: tf.Tensor, states: Any, training: bool = False) -> tuple:
        h_prev = states[0] if isinstance(states, (list, tuple)) else states
        z, r, cand = _gates(self, tf.matmul(inputs, self.kernel), h_prev)
        h = z * h_prev + (1.0 - z) * cand
        return tf.concat([h, z, r, cand], axis=-1), [h]


def _split4(seq: tf.Tensor) -> tuple[tf.Tensor, ...]:
    return tuple(tf.split(seq, 4, axis=-1))


def recompute_gates(x: tf.Tensor, seq: tf.Tensor, gru: keras.layers.GRU) -> tuple:
    """z, r, h̃ for every step from a GRU's output sequence, in three large matmuls' worth of
    work: h_prev is the output shifted by one step (h0 = 0)."""
    batch, steps, units = tf.shape(seq)[0], tf.shape(seq)[1], gru.units
    h_prev = tf.concat([tf.zeros_like(seq[:, :1]), seq[:, :-1]], axis=1)
    xw = tf.matmul(tf.reshape(x, [batch * steps, -1]), gru.cell.kernel)
    gates = _gates(gru.cell, xw, tf.reshape(h_prev, [batch * steps, units]))
    return tuple(tf.reshape(g, [batch, steps, units]) for g in gates)


def _gate_dict(z: Any, r: Any, cand: Any) -> dict[str, np.ndarray]:
    return {"update": np.asarray(z), "reset": np.asarray(r), "candidate": np.asarray(cand)}


def _train_fn(layer: keras.layers.Layer, loss_of: Callable[[Any], tf.Tensor]) -> Callable:
    """A tf.function taking a training step's gradients w.r.t. the weights and the inputs."""

    @tf.function(jit_compile=False)
    def step(x: tf.Tensor) -> list:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_of(layer(x, training=True))
        # Returned, so that the graph cannot prune any gradient.
        return tape.gradient(loss, [x, *layer.trainable_weights])

    return step


def _sum_all(*tensors: tf.Tensor) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(t) for t in tensors])


def _h_only(out: Any) -> dict[str, np.ndarray]:
    return {"h": np.asarray(out)}


def _gategru_outputs(out: Any) -> dict[str, np.ndarray]:
    seq, gates = out
    return {"h": np.asarray(seq), **_gate_dict(*(gates[k] for k in gategru.layers.GATE_NAMES))}


def _cell_outputs(out: Any) -> dict[str, np.ndarray]:
    h, z, r, cand = _split4(out)
    return {"h": np.asarray(h), **_gate_dict(z, r, cand)}


def _gategru_loss(out: Any) -> tf.Tensor:
    seq, gates = out
    return _sum_all(seq, *gates.values())


def keras_benches(
    dims: tuple[int, int, int, int], x_np: np.ndarray, wanted: set[str], modes: set[str],
    reset_after: bool = True,
) -> tuple[list[Bench], list[np.ndarray]]:
    """The TensorFlow variants, all with the same weights (so their outputs can be checked
    against each other). Returns them and the weights in Keras's layout."""
    _, _, width, units = dims
    x = tf.constant(x_np)
    gru = keras.layers.GRU(units, return_sequences=True, reset_after=reset_after)
    gru.build((None, None, width))
    kernel, recurrent, bias = gru.get_weights()
    # Keras initialises the bias to 0; a random one makes the output checks cover it.
    bias = (0.1 * np.random.default_rng(1).standard_normal(bias.shape)).astype(np.float32)
    weights = [kernel, recurrent, bias]
    gru.set_weights(weights)
    benches: list[Bench] = []

    def add(name: str, make: Callable[[], keras.layers.Layer], outputs: Callable[[Any], dict],
            loss_of: Callable[[Any], tf.Tensor] | None) -> None:
        if name not in wanted:
            return
        layer = make()
        if layer is not gru:
            layer.build((None, None, width))
            layer.set_weights(weights)
        fwd = tf.function(lambda v: layer(v, training=False), jit_compile=False)
        if "forward" in modes:
            benches.append(Bench(name, "forward", timed_loop(lambda: fwd(x)),
                                 outputs=lambda: outputs(fwd(x))))
        if "train" in modes and loss_of is not None:
            step = _train_fn(layer, loss_of)
            benches.append(Bench(name, "train", timed_loop(lambda: step(x))))

    same = {"return_sequences": True, "reset_after": reset_after}
    add("gategru_gates", lambda: gategru.GateGRU(units, return_gates=True, **same),
        _gategru_outputs, _gategru_loss)
    add("gategru_nogates", lambda: gategru.GateGRU(units, **same), _h_only, _sum_all)
    add("keras_gru", lambda: gru, _h_only, _sum_all)
    add("keras_cell", lambda: keras.layers.RNN(GatesGRUCell(units, reset_after=reset_after),
                                               return_sequences=True),
        _cell_outputs, _sum_all)

    if "keras_recompute" in wanted and "forward" in modes:

        @tf.function(jit_compile=False)
        def recompute(v: tf.Tensor) -> tuple:
            seq = gru(v, training=False)
            return (seq, *recompute_gates(v, seq, gru))

        def recompute_outputs() -> dict[str, np.ndarray]:
            seq, z, r, cand = recompute(x)
            return {"h": np.asarray(seq), **_gate_dict(z, r, cand)}

        benches.append(Bench("keras_recompute", "forward", timed_loop(lambda: recompute(x)),
                             outputs=recompute_outputs))
    return benches, weights
