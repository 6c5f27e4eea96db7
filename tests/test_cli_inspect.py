"""`gategru inspect` as a user runs it: the HDF5 file against the float64 oracle, the
summary table, the pictures, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from gate_oracles import GATES, gru_ref, on_input_time, padded_inputs, randomize

from gategru import GateGRU
from gategru.cli import main


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "gategru", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def saved_model(rng, folder) -> tuple[str, keras.Model]:
    inputs = keras.Input((None, 3))
    h = keras.layers.Masking()(inputs)
    h = keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=True), name="bi")(h)
    h = GateGRU(4, name="top")(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    randomize(model, rng)
    path = str(folder / "model.keras")
    model.save(path)
    return path, model


def one_error_line(stderr: str) -> str:
    """The error line; it must be the only one from gategru and come without a traceback
    (TensorFlow's own start-up lines may precede it)."""
    assert "Traceback" not in stderr
    ours = [line for line in stderr.splitlines() if line.startswith("gategru")]
    assert len(ours) == 1 and stderr.strip().splitlines()[-1] == ours[0], stderr
    return ours[0]


def test_inspect_writes_gates_table_and_pictures(rng, tmp_path):
    model_path, model = saved_model(rng, tmp_path)
    x, mask = padded_inputs(rng, 7, int(rng.integers(10, 25)), 3)
    np.save(tmp_path / "inputs.npy", x)

    result = run_cli("inspect", "model.keras", "inputs.npy", "--out", "gates.h5",
                     "--plot", "gates.png", "--batch-size", "3", "--sample", "1", cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    bi = model.get_layer("bi")
    forward = gru_ref(bi.forward_layer, x, mask)
    backward = gru_ref(bi.backward_layer, x, mask)
    merged = np.concatenate([forward.h_seq, backward.h_seq[:, ::-1]], axis=-1)
    expected = {
        "bi/forward": on_input_time(forward, False),
        "bi/backward": on_input_time(backward, True),
        "top": on_input_time(gru_ref(model.get_layer("top"), merged, mask), False),
    }
    with h5py.File(tmp_path / "gates.h5", "r") as f:
        for key, gates in expected.items():
            for name in GATES:
                np.testing.assert_allclose(f[key][name][()], gates[name], atol=2e-5,
                                           err_msg=f"{key} {name}")

    lines = result.stdout.splitlines()
    for key, gates in expected.items():
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ("))
        table = {line.split()[0]: line.split()[1:] for line in lines[start + 2 : start + 5]}
        for name in GATES:
            mean = gates[name][mask].mean()
            assert abs(float(table[name][0]) - mean) <= 0.0011, (key, name)
    for name in ("gates_bi_forward", "gates_bi_backward", "gates_top"):
        for suffix in (".png", "_saturation.png"):
            assert (tmp_path / f"{name}{suffix}").read_bytes()[:4] == b"\x89PNG"


def test_inspect_wrong_shape_and_help(rng, tmp_path):
    saved_model(rng, tmp_path)
    np.save(tmp_path / "wide.npy", rng.normal(size=(2, 5, 4)).astype(np.float32))
    result = run_cli("inspect", "model.keras", "wide.npy", cwd=tmp_path)
    assert result.returncode == 1
    assert "expects inputs of shape (None, None, 3)" in one_error_line(result.stderr)
    assert not (tmp_path / "gates.h5").exists()

    shown = run_cli("inspect", "--help", cwd=tmp_path)
    assert shown.returncode == 0
    for option in ("--out", "--plot", "--batch-size", "--sample", "--dtype", "MODEL", "INPUTS"):
        assert option in shown.stdout


def test_inspect_errors_in_process(rng, tmp_path, capsys):
    model_path, _ = saved_model(rng, tmp_path)
    inputs = str(tmp_path / "inputs.npy")
    np.save(inputs, rng.normal(size=(3, 6, 3)).astype(np.float32))
    no_gru = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    no_gru.save(tmp_path / "dense.keras")
    (tmp_path / "junk.npy").write_text("not an array")

    cases = [
        (["missing.keras", inputs], "model file 'missing.keras' does not exist"),
        ([model_path, "missing.npy"], "inputs file 'missing.npy' does not exist"),
        ([model_path, str(tmp_path / "junk.npy")], "cannot read"),
        ([str(tmp_path / "dense.keras"), inputs], "has no GRU layers"),
        ([inputs, inputs], "cannot load a Keras model"),
        ([model_path, inputs, "--sample", "3"], "--sample 3 is out of range for 3 samples"),
        ([model_path, inputs, "--out", str(tmp_path / "nowhere" / "g.h5")], "does not exist"),
    ]
    for args, message in cases:
        assert main(["inspect", *args]) == 1, args
        err = capsys.readouterr().err
        assert message in one_error_line(err), (args, err)
        assert one_error_line(err).startswith("gategru inspect: error: ")

    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", model_path, inputs, "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


def test_inspect_float16_and_quiet(rng, tmp_path, capsys):
    model_path, model = saved_model(rng, tmp_path)
    x, mask = padded_inputs(rng, 4, 9, 3)
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "g16.h5")
    assert main(["inspect", model_path, str(tmp_path / "x.npy"), "--out", out,
                 "--dtype", "float16", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    forward = on_input_time(gru_ref(model.get_layer("bi").forward_layer, x, mask), False)
    with h5py.File(out, "r") as f:
        stored = f["bi/forward/update"][()]
        assert stored.dtype == np.float16
        np.testing.assert_allclose(stored, forward["update"], atol=1e-3)
        assert f.attrs["time_axis"] == "input"
