"""SavedModel export, reloaded in a fresh process after ``import gategru``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

from gategru import GateGRU


def run_fresh(script: str, cwd) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def gated_model(rng) -> keras.Model:
    inputs = keras.Input((9, 3))
    seq, gates = GateGRU(5, return_sequences=True, return_gates=True, reset_after=False)(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2)(seq), gates["update"]])
    model.set_weights([rng.normal(size=w.shape) * 0.5 for w in model.get_weights()])
    return model


def test_model_export_reloads_in_a_fresh_process(rng, tmp_path):
    model = gated_model(rng)
    x = rng.normal(size=(4, 9, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "exported"))
    np.save(tmp_path / "x.npy", x)
    run_fresh("""
        import numpy as np, tensorflow as tf
        import gategru  # registers the ops the SavedModel uses
        loaded = tf.saved_model.load("exported")
        out = loaded.serve(np.load("x.npy"))
        np.save("out0.npy", out[0].numpy()); np.save("out1.npy", out[1].numpy())
    """, tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "out0.npy"), expected[0], atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out1.npy"), expected[1], atol=1e-6)


def test_tf_saved_model_save_with_a_signature(rng, tmp_path):
    model = gated_model(rng)
    x = rng.normal(size=(2, 9, 3)).astype(np.float32)
    expected = model(x)[0].numpy()
    module = tf.Module()
    module.model = model
    module.predict = tf.function(lambda inputs: model(inputs)[0],
                                 input_signature=[tf.TensorSpec([None, 9, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "saved"))
    np.save(tmp_path / "x.npy", x)
    run_fresh("""
        import numpy as np, tensorflow as tf
        import gategru
        loaded = tf.saved_model.load("saved")
        np.save("out.npy", loaded.predict(np.load("x.npy")).numpy())
    """, tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
