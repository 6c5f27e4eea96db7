"""SavedModel export, reloaded in a fresh process after ``import gategru``, or by a serving
process that only loads the op library."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from gategru import GateGRU, op_library_path


def run_fresh(script: str, cwd) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, cwd=cwd, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def gated_model(rng, reset_after: bool = False) -> keras.Model:
    inputs = keras.Input((9, 3))
    seq, gates = GateGRU(5, return_sequences=True, return_gates=True,
                         reset_after=reset_after)(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2)(seq), gates["update"]])
    model.set_weights([rng.normal(size=w.shape) * 0.5 for w in model.get_weights()])
    return model


@pytest.mark.parametrize("reset_after", [True, False])
def test_model_export_reloads_in_a_fresh_process(rng, tmp_path, reset_after):
    model = gated_model(rng, reset_after)
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


def test_serving_process_needs_only_the_op_library(rng, tmp_path):
    """What a server without gategru's Python code does: load _gategru_ops.so, then the
    SavedModel. Without the library, loading fails naming the op."""
    model = gated_model(rng, reset_after=True)
    x = rng.normal(size=(3, 9, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "exported"))
    np.save(tmp_path / "x.npy", x)
    out = run_fresh(f"""
        import sys
        import numpy as np, tensorflow as tf
        try:
            tf.saved_model.load("exported")
            print("LOADED WITHOUT LIBRARY")
        except Exception as err:
            print("WITHOUT:", "GateGruForward" in str(err))
        tf.load_op_library({op_library_path()!r})
        loaded = tf.saved_model.load("exported")
        out = loaded.serve(np.load("x.npy"))
        np.save("out0.npy", out[0].numpy()); np.save("out1.npy", out[1].numpy())
        print("GATEGRU IMPORTED:", any(m.split(".")[0] == "gategru" for m in sys.modules))
    """, tmp_path)
    assert "WITHOUT: True" in out, out
    assert "GATEGRU IMPORTED: False" in out, out
    np.testing.assert_allclose(np.load(tmp_path / "out0.npy"), expected[0], atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "out1.npy"), expected[1], atol=1e-6)
