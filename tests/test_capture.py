"""gategru.capture on existing models, judged by a float64 recompute from the models' own
weights: stacked, go_backwards, Bidirectional, masks, Sequential and functional, Keras GRU
and GateGRU; the model is unchanged; what cannot be reached says so."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from gate_oracles import (
    GATES,
    assert_gates_close,
    dense,
    gru_ref,
    on_input_time,
    padded_inputs,
    randomize,
)

from gategru import CaptureError, GateGRU, capture

ATOL = 2e-5  # float32 model against the float64 oracle, through up to three layers


def test_functional_stack_with_masking_and_go_backwards(rng):
    samples, time, features = 6, int(rng.integers(8, 20)), 3
    inputs = keras.Input((None, features))
    masked = keras.layers.Masking(0.0)(inputs)
    projected = keras.layers.Dense(5, name="proj")(masked)
    h1 = keras.layers.GRU(7, return_sequences=True, name="low")(projected)
    h2 = keras.layers.GRU(6, return_sequences=True, go_backwards=True, name="back")(h1)
    h3 = keras.layers.GRU(4, reset_after=False, name="top")(h2)
    model = keras.Model(inputs, keras.layers.Dense(1)(h3))
    randomize(model, rng)
    x, mask = padded_inputs(rng, samples, time, features)

    gates = capture(model, x)

    assert set(gates) == {"low", "back", "top"}
    ref1 = gru_ref(model.get_layer("low"), dense(model.get_layer("proj"), x), mask)
    ref2 = gru_ref(model.get_layer("back"), ref1.h_seq, mask)
    # Keras hands a go_backwards layer's output on in processing order, with the input mask.
    ref3 = gru_ref(model.get_layer("top"), ref2.h_seq, mask)
    assert_gates_close(gates["low"], on_input_time(ref1, False), ATOL, "low")
    assert_gates_close(gates["back"], on_input_time(ref2, True), ATOL, "back")
    assert_gates_close(gates["top"], on_input_time(ref3, False), ATOL, "top")
    for key, layer_gates in gates.items():
        for name in GATES:
            assert not layer_gates[name][~mask].any(), f"{key} {name} not 0 at masked steps"
            assert np.abs(layer_gates[name][mask]).min() > 0


def test_bidirectional_both_directions_on_input_time(rng):
    samples, time, features = 5, int(rng.integers(6, 16)), 4
    inputs = keras.Input((time, features))
    masked = keras.layers.Masking()(inputs)
    both = keras.layers.Bidirectional(
        keras.layers.GRU(6, return_sequences=True), merge_mode="concat", name="bi"
    )(masked)
    top = keras.layers.GRU(3, name="top")(both)
    model = keras.Model(inputs, top)
    randomize(model, rng)
    x, mask = padded_inputs(rng, samples, time, features)

    gates = capture(model, x, batch_size=2)

    bi = model.get_layer("bi")
    forward = gru_ref(bi.forward_layer, x, mask)
    backward = gru_ref(bi.backward_layer, x, mask)
    assert_gates_close(gates["bi/forward"], on_input_time(forward, False), ATOL, "forward")
    assert_gates_close(gates["bi/backward"], on_input_time(backward, True), ATOL, "backward")
    merged = np.concatenate([forward.h_seq, backward.h_seq[:, ::-1]], axis=-1)
    top_ref = gru_ref(model.get_layer("top"), merged, mask)
    assert_gates_close(gates["top"], on_input_time(top_ref, False), ATOL, "top")
    # The backward direction's first processed step is the last unmasked input step.
    last = mask.sum(axis=1) - 1
    assert (gates["bi/backward"]["update"][0, last[0]] != 0).all()
    assert not gates["bi/backward"]["update"][~mask].any()


def test_sequential_embedding_mask_zero_and_gategru(rng):
    samples, time, vocab = 7, int(rng.integers(5, 14)), 20
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab, 4, mask_zero=True, name="embed"),
            GateGRU(5, return_sequences=True, name="gate_gru"),
            keras.layers.GRU(3, name="gru"),
        ]
    )
    randomize(model, rng)
    tokens = rng.integers(1, vocab, size=(samples, time)).astype(np.int32)
    lengths = rng.integers(1, time + 1, size=samples)
    tokens[np.arange(time)[None, :] >= lengths[:, None]] = 0
    mask = tokens != 0

    gates = capture(model, tokens)

    embedded = model.get_layer("embed").get_weights()[0][tokens]
    ref1 = gru_ref(model.get_layer("gate_gru"), embedded, mask)
    ref2 = gru_ref(model.get_layer("gru"), ref1.h_seq, mask)
    assert_gates_close(gates["gate_gru"], on_input_time(ref1, False), ATOL, "gate_gru")
    assert_gates_close(gates["gru"], on_input_time(ref2, False), ATOL, "gru")


def test_gategru_model_with_its_own_gate_outputs(rng):
    inputs = keras.Input((None, 3))
    seq, own = GateGRU(8, return_sequences=True, return_gates=True, go_backwards=True,
                       name="g")(inputs)
    model = keras.Model(inputs, [seq, own])
    randomize(model, rng)
    x = rng.normal(size=(4, 9, 3)).astype(np.float32)

    gates = capture(model, x)["g"]

    _, own_gates = model.predict(x, verbose=0)
    for name in GATES:  # the model's own gates come in processing order
        np.testing.assert_allclose(gates[name], own_gates[name][:, ::-1], atol=1e-6)
    ref = gru_ref(model.get_layer("g"), x, None)
    assert_gates_close(gates, on_input_time(ref, True), ATOL)


def test_model_is_unchanged(rng):
    inputs = keras.Input((None, 2))
    h = keras.layers.Masking()(inputs)
    h = keras.layers.GRU(6, return_sequences=True, name="a")(h)
    h = keras.layers.Bidirectional(keras.layers.GRU(4), name="b")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    randomize(model, rng)
    x, _ = padded_inputs(rng, 5, 10, 2)
    weights = [w.copy() for w in model.get_weights()]
    before = model.predict(x, verbose=0)
    config = model.to_json()
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model.layers}

    capture(model, x, batch_size=2)

    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert model.to_json() == config
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == nodes


def test_batches_and_memmap_inputs_give_the_same_gates(rng, tmp_path):
    model = keras.Sequential([keras.Input((12, 3)), keras.layers.GRU(5, return_sequences=True,
                                                                     name="g")])
    randomize(model, rng)
    x = rng.normal(size=(11, 12, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")

    whole = capture(model, x)["g"]
    batched = capture(model, mapped, batch_size=4)["g"]

    ref = gru_ref(model.get_layer("g"), x, None)
    assert_gates_close(whole, on_input_time(ref, False), ATOL)
    assert_gates_close(batched, whole, 1e-6)


def test_stateful_gru_starts_from_its_state_and_keeps_it(rng):
    batch = 3
    model = keras.Sequential(
        [keras.Input(batch_shape=(batch, None, 2)),
         keras.layers.GRU(4, stateful=True, return_sequences=True, name="s")]
    )
    randomize(model, rng)
    model.predict(rng.normal(size=(batch, 5, 2)).astype(np.float32), verbose=0)
    stored = model.get_layer("s").states[0].numpy().copy()
    assert np.abs(stored).max() > 0
    x = rng.normal(size=(batch, 6, 2)).astype(np.float32)

    gates = capture(model, x)["s"]

    ref = gru_ref(model.get_layer("s"), x, None, h0=stored)
    assert_gates_close(gates, on_input_time(ref, False), ATOL)
    np.testing.assert_array_equal(model.get_layer("s").states[0].numpy(), stored)
    with pytest.raises(CaptureError, match="holds states for 3 samples"):
        capture(model, x, batch_size=2)


def test_shared_layer_called_twice(rng):
    a, b = keras.Input((None, 3)), keras.Input((None, 3))
    shared = keras.layers.GRU(4, name="shared")
    model = keras.Model([a, b], keras.layers.Add()([shared(a), shared(b)]))
    randomize(model, rng)
    xa, xb = (rng.normal(size=(2, 5, 3)).astype(np.float32) for _ in range(2))

    gates = capture(model, [xa, xb])

    assert set(gates) == {"shared", "shared:1"}
    layer = model.get_layer("shared")
    assert_gates_close(gates["shared"], on_input_time(gru_ref(layer, xa, None), False), ATOL)
    assert_gates_close(gates["shared:1"], on_input_time(gru_ref(layer, xb, None), False), ATOL)


class _Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.gru = keras.layers.GRU(4)
        self.head = keras.layers.Dense(1)

    def call(self, x):  # noqa: ANN201
        return self.head(self.gru(x))


class _Wrapper(keras.layers.Layer):
    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.gru = keras.layers.GRU(3)

    def call(self, x):  # noqa: ANN201
        return self.gru(x)


def test_what_cannot_be_reached_says_so(rng):
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    subclassed = _Subclassed()
    subclassed(x)
    with pytest.raises(CaptureError, match="subclassed model.*GateGRU.*return_gates"):
        capture(subclassed, x)

    inputs = keras.Input((None, 3))
    wrapped = keras.Model(inputs, _Wrapper(name="wrap")(inputs))
    with pytest.raises(CaptureError, match="custom layer 'wrap'"):
        capture(wrapped, x)

    inner = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(2)], name="inner")
    outer = keras.Model(inputs, inner(inputs))
    with pytest.raises(CaptureError, match="nested model 'inner'.*get_layer"):
        capture(outer, x)
    assert set(capture(inner, x)) == {inner.layers[0].name}  # the way out it suggests

    no_gru = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    with pytest.raises(CaptureError, match="no GRU layers"):
        capture(no_gru, x)

    unbuilt = keras.Sequential([keras.layers.GRU(2)])
    with pytest.raises(CaptureError, match="not built"):
        capture(unbuilt, x)


def test_wrong_input_shape_is_a_clear_error(rng):
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(2)])
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, None, 3\)"):
        capture(model, rng.normal(size=(2, 5, 4)).astype(np.float32))


def test_progress_bar_on_request(rng, capsys):
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.GRU(2, name="g")])
    x = rng.normal(size=(6, 4, 2)).astype(np.float32)
    capture(model, x, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "6/6 samples" in err and "100.0%" in err
    capture(model, x, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
