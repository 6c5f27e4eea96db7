"""GateGRU against keras.layers.GRU with the same weights, and its gates against the
float64 oracle, over the layer's configurations."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_mask

from gategru import GateGRU
from gategru.reference import gru_layer_reference

ATOL = 1e-5


def twin_layers(rng, input_dim, units, **kwargs):
    """A Keras GRU with random weights (biases too) and a GateGRU with the same weights."""
    keras_gru = keras.layers.GRU(units, **kwargs)
    keras_gru.build((None, None, input_dim))
    keras_gru.set_weights([rng.normal(size=w.shape) * 0.5 for w in keras_gru.get_weights()])
    gate_gru = GateGRU(units, return_gates=True, **kwargs)
    gate_gru.build((None, None, input_dim))
    gate_gru.set_weights(keras_gru.get_weights())
    return keras_gru, gate_gru


def as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize(
    ("reset_after", "use_bias", "go_backwards", "mask_kind"),
    list(itertools.product([True, False], [True, False], [False, True],
                           ["none", "right_padded", "holes"])),
)
def test_sequences_states_and_gates(rng, reset_after, use_bias, go_backwards, mask_kind):
    batch, time, input_dim, units = 5, 11, 3, 13
    x = rng.normal(size=(batch, time, input_dim)).astype(np.float32)
    mask = random_mask(rng, batch, time, mask_kind)
    kwargs = dict(reset_after=reset_after, use_bias=use_bias, go_backwards=go_backwards,
                  return_sequences=True, return_state=True)
    keras_gru, gate_gru = twin_layers(rng, input_dim, units, **kwargs)
    expected = keras_gru(x, mask=mask)
    seq, state, gates = gate_gru(x, mask=mask)
    np.testing.assert_allclose(seq, expected[0], atol=ATOL)
    np.testing.assert_allclose(state, expected[1], atol=ATOL)

    weights = keras_gru.get_weights()
    ref = gru_layer_reference(x, weights[0], weights[1], weights[2] if use_bias else None,
                              mask=mask, reset_after=reset_after, go_backwards=go_backwards)
    for name, value in (("update", ref.update), ("reset", ref.reset),
                        ("candidate", ref.candidate)):
        assert gates[name].shape == (batch, time, units)
        np.testing.assert_allclose(gates[name], value, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(seq, ref.h_seq, atol=ATOL)


@pytest.mark.parametrize("mask_kind", ["none", "right_padded", "holes"])
@pytest.mark.parametrize("return_state", [False, True])
def test_last_output_only(rng, mask_kind, return_state):
    x = rng.normal(size=(4, 8, 6)).astype(np.float32)
    mask = random_mask(rng, 4, 8, mask_kind)
    keras_gru, gate_gru = twin_layers(rng, 6, 9, return_state=return_state)
    expected = as_list(keras_gru(x, mask=mask))
    got = as_list(gate_gru(x, mask=mask))
    assert len(got) == len(expected) + 1 and set(got[-1]) == {"update", "reset", "candidate"}
    for e, g in zip(expected, got[:-1], strict=True):
        assert tuple(g.shape) == tuple(e.shape)
        np.testing.assert_allclose(g, e, atol=ATOL)


def test_without_return_gates_output_structure_matches_keras(rng):
    x = rng.normal(size=(3, 5, 4)).astype(np.float32)
    keras_gru = keras.layers.GRU(6, return_state=True)
    plain = GateGRU(6, return_state=True)
    keras_gru.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(keras_gru.get_weights())
    expected, got = keras_gru(x), plain(x)
    assert len(got) == len(expected) == 2
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, atol=ATOL)


def test_initial_state(rng):
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    h0 = rng.normal(size=(3, 10)).astype(np.float32)
    keras_gru, gate_gru = twin_layers(rng, 4, 10, return_sequences=True)
    np.testing.assert_allclose(gate_gru(x, initial_state=h0)[0],
                               keras_gru(x, initial_state=h0), atol=ATOL)


def test_stateful_and_reset_state(rng):
    batch = 3
    chunks = [rng.normal(size=(batch, 6, 4)).astype(np.float32) for _ in range(3)]
    keras_gru = keras.layers.GRU(8, stateful=True, return_sequences=True)
    gate_gru = GateGRU(8, stateful=True, return_sequences=True)
    keras_gru.build((batch, None, 4))
    gate_gru.build((batch, None, 4))
    keras_gru.set_weights([rng.normal(size=w.shape) * 0.5 for w in keras_gru.get_weights()])
    gate_gru.set_weights(keras_gru.get_weights())
    for chunk in chunks[:2]:
        np.testing.assert_allclose(gate_gru(chunk), keras_gru(chunk), atol=ATOL)
    np.testing.assert_allclose(gate_gru.states[0], keras_gru.states[0], atol=ATOL)
    keras_gru.reset_state()
    gate_gru.reset_state()
    assert not np.any(gate_gru.states[0].numpy())
    np.testing.assert_allclose(gate_gru(chunks[2]), keras_gru(chunks[2]), atol=ATOL)


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.3])
@pytest.mark.parametrize("reset_after", [True, False])
def test_dropout_in_training_matches_keras_with_same_seed(rng, recurrent_dropout, reset_after):
    x = rng.normal(size=(4, 9, 5)).astype(np.float32)
    seed = int(rng.integers(1 << 30))
    kwargs = dict(dropout=0.4, recurrent_dropout=recurrent_dropout, seed=seed,
                  reset_after=reset_after, return_sequences=True)
    keras_gru, gate_gru = twin_layers(rng, 5, 7, **kwargs)
    expected = keras_gru(x, training=True)
    got, gates = gate_gru(x, training=True)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    assert not np.allclose(got, keras_gru(x, training=False), atol=1e-3)  # dropout was on
    # inference ignores dropout, as in Keras
    np.testing.assert_allclose(gate_gru(x)[0], keras_gru(x), atol=ATOL)


def test_implementation_1_dropout_matches_keras_generic_path(rng):
    """implementation=1 draws one input-dropout mask per gate."""
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    seed = int(rng.integers(1 << 30))
    keras_gru, gate_gru = twin_layers(rng, 4, 5, dropout=0.5, seed=seed, implementation=1,
                                      use_cudnn=False, return_sequences=True)
    np.testing.assert_allclose(gate_gru(x, training=True)[0], keras_gru(x, training=True),
                               atol=ATOL)


@pytest.mark.parametrize(("activation", "recurrent_activation"),
                         [("relu", "hard_sigmoid"), ("softsign", "sigmoid")])
def test_other_activations_use_the_gated_fallback(rng, activation, recurrent_activation):
    x = rng.normal(size=(3, 8, 4)).astype(np.float32)
    mask = random_mask(rng, 3, 8, "holes")
    keras_gru, gate_gru = twin_layers(rng, 4, 6, activation=activation,
                                      recurrent_activation=recurrent_activation,
                                      return_sequences=True, return_state=True)
    expected = keras_gru(x, mask=mask)
    seq, state, gates = gate_gru(x, mask=mask)
    np.testing.assert_allclose(seq, expected[0], atol=ATOL)
    np.testing.assert_allclose(state, expected[1], atol=ATOL)
    # the gates returned are the ones that made the state: h = z·h_prev + (1-z)·h̃
    seq, z, hc = seq.numpy(), gates["update"].numpy(), gates["candidate"].numpy()
    for b in range(3):
        h = np.zeros(6)
        for t in range(8):
            if mask[b, t]:
                h = z[b, t] * h + (1 - z[b, t]) * hc[b, t]
                np.testing.assert_allclose(seq[b, t], h, atol=ATOL)
            else:
                assert not np.any(z[b, t]) and not np.any(hc[b, t])


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_gradients_match_keras(rng, reset_after, mask_kind):
    x = tf.constant(rng.normal(size=(4, 10, 3)).astype(np.float32))
    mask = random_mask(rng, 4, 10, mask_kind)
    target = tf.constant(rng.normal(size=(4, 10, 8)).astype(np.float32))
    keras_gru, gate_gru = twin_layers(rng, 3, 8, reset_after=reset_after,
                                      return_sequences=True, return_state=True)
    results = []
    for layer in (keras_gru, gate_gru):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, mask=mask, training=True)
            loss = tf.reduce_sum((out[0] - target) ** 2) + tf.reduce_sum(out[1] ** 3)
        results.append(tape.gradient(loss, [x, *layer.trainable_weights]))
    for name, e, g in zip(["inputs", "kernel", "recurrent_kernel", "bias"], *results, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_policy(rng, policy):
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    keras_gru, _ = twin_layers(rng, 4, 5, return_sequences=True)
    layer = GateGRU(5, return_sequences=True, return_gates=True, dtype=policy)
    layer.build(x.shape)
    layer.set_weights(keras_gru.get_weights())
    seq, gates = layer(x)
    assert seq.dtype == layer.compute_dtype and gates["reset"].dtype == layer.compute_dtype
    tol = 1e-2 if policy == "mixed_float16" else 5e-2
    np.testing.assert_allclose(tf.cast(seq, tf.float32), keras_gru(x), atol=tol)


def test_float64_layer(rng):
    x = rng.normal(size=(2, 5, 3))
    layer = GateGRU(4, return_sequences=True, return_gates=True, dtype="float64")
    seq, gates = layer(x)
    assert seq.dtype == tf.float64
    w = layer.get_weights()
    ref = gru_layer_reference(x, w[0], w[1], w[2])
    np.testing.assert_allclose(seq, ref.h_seq, atol=1e-12)
    np.testing.assert_allclose(gates["reset"], ref.reset, atol=1e-12)
