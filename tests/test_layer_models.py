"""GateGRU inside models: Sequential, functional, subclassed; fit/evaluate/predict;
tf.function; saving; distribution; bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from gategru import GateGRU
from gategru.reference import gru_layer_reference


def seed_model(units: int, features: int) -> keras.Model:
    """The seed story: Dense head on the sequence, outputs [out, r, z], gates weighted 0."""
    inputs = keras.Input((None, features))
    seq, gates = GateGRU(units, return_sequences=True, return_gates=True, name="gru")(inputs)
    out = keras.layers.Dense(1, name="out")(seq)
    r = keras.layers.Identity(name="r")(gates["reset"])
    z = keras.layers.Identity(name="z")(gates["update"])
    model = keras.Model(inputs, [out, r, z])
    model.compile(keras.optimizers.Adam(0.02), loss=["mse", "mse", "mse"],
                  loss_weights=[1.0, 0.0, 0.0])
    return model


def memory_task(rng, samples=128, time=30):
    """Target: a decaying running sum of sparse input events (needs the recurrent state)."""
    x = (rng.random((samples, time, 2)) < 0.1).astype(np.float32)
    y = np.zeros((samples, time, 1), np.float32)
    acc = np.zeros(samples)
    for t in range(time):
        acc = 0.8 * acc + x[:, t, 0] - 0.5 * x[:, t, 1]
        y[:, t, 0] = acc
    return x, y


def test_seed_model_trains_and_gates_follow_the_weights(rng):
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    x, y = memory_task(rng)
    model = seed_model(16, 2)
    zeros = np.zeros((*x.shape[:2], 16), np.float32)
    history = model.fit(x, [y, zeros, zeros], epochs=12, batch_size=32, verbose=0)
    main_loss = history.history["out_loss"]
    assert main_loss[-1] < 0.5 * main_loss[0]
    out, r, z = model.predict(x[:8], verbose=0)
    w = model.get_layer("gru").get_weights()
    ref = gru_layer_reference(x[:8], *w)
    np.testing.assert_allclose(r, ref.reset, atol=1e-5)
    np.testing.assert_allclose(z, ref.update, atol=1e-5)
    evaluated = model.evaluate(x, [y, zeros, zeros], verbose=0)
    assert np.isfinite(evaluated).all()


def test_sequential_model_fit_and_predict(rng):
    x, y = memory_task(rng, samples=64)
    model = keras.Sequential([keras.Input((30, 2)), GateGRU(8), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(x, y[:, -1], epochs=2, verbose=0)
    assert model.predict(x, verbose=0).shape == (64, 1)


class GatedRegressor(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.gru = GateGRU(6, return_sequences=True, return_gates=True)
        self.head = keras.layers.Dense(1)

    def call(self, x):
        seq, gates = self.gru(x)
        # a loss term on the gates: trains through the gate outputs
        self.add_loss(0.01 * tf.reduce_mean(gates["update"]))
        return self.head(seq)


def test_subclassed_model_with_gate_loss(rng):
    x, y = memory_task(rng, samples=32)
    model = GatedRegressor()
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_gate_loss_moves_the_gates(rng):
    """A loss on the update gate alone trains the weights toward a closed gate."""
    x = tf.constant(rng.normal(size=(8, 12, 3)).astype(np.float32))
    layer = GateGRU(5, return_sequences=True, return_gates=True)
    layer.build(x.shape)
    opt = keras.optimizers.SGD(0.5)
    means = []
    for _ in range(20):
        with tf.GradientTape() as tape:
            _, gates = layer(x, training=True)
            loss = tf.reduce_mean(gates["update"])
        means.append(float(loss))
        opt.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights),
                                layer.trainable_weights, strict=True))
    assert means[-1] < means[0] - 0.1


def test_inside_tf_function(rng):
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    layer = GateGRU(5, return_sequences=True, return_gates=True)
    eager = layer(x)

    @tf.function
    def run(inputs):
        return layer(inputs)

    traced = run(tf.constant(x))
    np.testing.assert_allclose(traced[0], eager[0], atol=1e-6)
    np.testing.assert_allclose(traced[1]["candidate"], eager[1]["candidate"], atol=1e-6)


def test_save_and_load_keras_file(rng, tmp_path):
    """A trained model round-trips through a .keras file with its optimizer state, so
    training resumes where it stopped: one more step gives the same weights."""
    x, y = memory_task(rng, samples=16)
    targets = [y, np.zeros((16, 30, 7), np.float32), np.zeros((16, 30, 7), np.float32)]
    model = seed_model(7, 2)
    model.fit(x, targets, batch_size=8, epochs=1, verbose=0)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("gru"), GateGRU)
    for a, b in zip(before, loaded.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for m in (model, loaded):
        m.fit(x[:8], [t[:8] for t in targets], batch_size=8, epochs=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_inside_bidirectional(rng, tmp_path, merge_mode):
    """keras.layers.Bidirectional(GateGRU(...)): both directions against the float64 oracle
    (the backward one with go_backwards, as Keras runs it), training, saving and loading."""
    units, features = 5, 3
    x = rng.normal(size=(4, 9, features)).astype(np.float32)
    mask = np.ones((4, 9), bool)
    mask[1, 6:] = mask[3, 4:] = False  # right padding, as a Masking layer would give
    inputs = keras.Input((None, features))
    masked = keras.layers.Masking(0.0)(inputs)
    bi = keras.layers.Bidirectional(GateGRU(units, return_sequences=True),
                                    merge_mode=merge_mode, name="bi")
    model = keras.Model(inputs, keras.layers.Dense(1)(bi(masked)))
    model.compile("adam", "mse")
    x[~mask] = 0.0
    seq = np.asarray(bi(keras.layers.Masking(0.0)(x)))
    fwd_w = bi.forward_layer.get_weights()
    bwd_w = bi.backward_layer.get_weights()
    fwd = gru_layer_reference(x, *fwd_w, mask=mask).h_seq
    bwd = gru_layer_reference(x, *bwd_w, mask=mask, go_backwards=True).h_seq[:, ::-1]
    expected = np.concatenate([fwd, bwd], -1) if merge_mode == "concat" else fwd + bwd
    valid = mask[..., None]  # Keras fills the backward direction's padding its own way
    np.testing.assert_allclose(np.where(valid, seq, 0), np.where(valid, expected, 0), atol=1e-5)
    y = rng.normal(size=(4, 9, 1)).astype(np.float32)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(bi.forward_layer.get_weights()[0], fwd_w[0])  # it trained
    path = tmp_path / "bi.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bi").forward_layer, GateGRU)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("symbolic", [True, False])
def test_bidirectional_with_gates_is_refused_clearly(rng, symbolic):
    """Keras's wrapper has no place for the gate dicts: a ValueError that says what to do,
    not a TypeError from inside Keras, on symbolic and on eager inputs."""
    layer = keras.layers.Bidirectional(GateGRU(3, return_sequences=True, return_gates=True))
    x = keras.Input((5, 2)) if symbolic else rng.normal(size=(2, 5, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"return_gates=True inside keras.layers.Bidirectional"
                                         r".*gategru.capture"):
        layer(x)
    # the same layer outside the wrapper still returns its gates
    seq, gates = GateGRU(3, return_sequences=True, return_gates=True)(x)
    assert set(gates) == {"update", "reset", "candidate"} and seq.shape[-1] == 3


def test_config_round_trip():
    layer = GateGRU(4, return_gates=True, reset_after=False, go_backwards=True, dropout=0.2,
                    activation="relu", name="g")
    clone = GateGRU.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.return_gates and not clone.reset_after and clone.go_backwards
    assert not clone.supports_jit


def test_converts_from_a_keras_gru_config_and_weights(rng):
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    gru = keras.layers.GRU(4, reset_after=False, return_sequences=True, go_backwards=True)
    expected = gru(x)
    twin = GateGRU.from_config(gru.get_config())
    twin.build(x.shape)
    twin.set_weights(gru.get_weights())
    np.testing.assert_allclose(twin(x), expected, atol=1e-5)


def test_mirrored_strategy_two_cpus(tmp_path):
    """Runs in a fresh process: logical devices must be set before TF initializes."""
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from gategru import GateGRU
        rng = np.random.default_rng()
        x = rng.normal(size=(32, 10, 3)).astype("float32")
        y = rng.normal(size=(32, 1)).astype("float32")
        def build():
            keras.utils.set_random_seed(7)
            m = keras.Sequential([keras.Input((10, 3)), GateGRU(6), keras.layers.Dense(1)])
            m.compile(keras.optimizers.SGD(0.1), "mse")
            return m
        single = build()
        single.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        with strategy.scope():
            mirrored = build()
        mirrored.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        print("MIRRORED_OK")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]


def test_bad_inputs_name_the_shapes(rng):
    layer = GateGRU(4)
    layer.build((None, None, 3))
    with pytest.raises(ValueError, match=r"built for inputs of width 3.*\(2, 5, 6\)"):
        layer(np.ones((2, 5, 6), np.float32))
    with pytest.raises(ValueError, match="ndim|rank|expects inputs of shape"):
        layer(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"initial_state must have shape \(batch, 4\)"):
        layer(np.ones((2, 5, 3), np.float32), initial_state=np.ones((2, 7), np.float32))


@pytest.mark.parametrize(("implementation", "dropout"), [(1, 0.3), (2, 0.3), (2, 0.0)])
def test_nan_padding_at_masked_steps_leaves_gradients_finite(rng, implementation, dropout):
    """Padding that a mask hides is never read: NaN there must not reach any gradient,
    whichever side projects the inputs (the op, or the layer with per-gate dropout)."""
    x = rng.normal(size=(4, 7, 3)).astype(np.float32)
    mask = np.ones((4, 7), bool)
    mask[0, 4:] = mask[2, 6:] = False
    layer = GateGRU(5, return_sequences=True, dropout=dropout, implementation=implementation)
    layer.build(x.shape)

    def grads(inputs):
        with tf.GradientTape() as tape:
            out = layer(tf.constant(inputs), mask=tf.constant(mask), training=True)
            loss = tf.reduce_sum(tf.where(mask[..., None], out, 0.0) ** 2)
        return [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]

    padded = np.where(mask[..., None], x, np.nan).astype(np.float32)
    with_nan = grads(padded)
    for weight, grad in zip(layer.trainable_weights, with_nan, strict=True):
        assert np.isfinite(grad).all() and np.abs(grad).sum() > 0, weight.name
    if dropout == 0:  # deterministic: the same gradients as with the real values there
        for got, want in zip(with_nan, grads(x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
