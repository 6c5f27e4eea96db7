"""Long sequences in time chunks: the files equal an in-memory capture (and the float64
oracle), float16 is float16 rounding, streams of chunks work, what cannot be chunked is
refused, and peak memory does not grow with the sequence length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from gate_oracles import GATES, assert_gates_close, gru_ref, on_input_time, randomize

from gategru import CaptureError, GateGRU, capture, capture_to_file, load_gates, stream_stats


def stacked_model(rng: np.random.Generator, features: int) -> keras.Model:
    inputs = keras.Input((None, features))
    h = keras.layers.Masking()(inputs)
    h = keras.layers.Dense(6, activation="tanh", name="proj")(h)
    # GateGRU below: the in-memory capture then feeds the upper twin exactly the values the
    # streamed one gets (below a Keras GRU they differ by ~1e-7, the two implementations).
    h = GateGRU(7, return_sequences=True, name="low")(h)
    h = keras.layers.Activation("relu", name="act")(h)
    h = keras.layers.GRU(5, return_sequences=True, reset_after=False, name="high")(h)
    # A head that mixes time steps is fine: it is not on the way to a GRU.
    out = keras.layers.GlobalAveragePooling1D(name="head")(h)
    model = keras.Model(inputs, out)
    randomize(model, rng)
    return model


def holed_inputs(rng, samples, time, features):
    x = rng.normal(size=(samples, time, features)).astype(np.float32)
    holes = rng.random((samples, time)) < 0.2
    x[holes] = 0.0
    return x, ~holes


def within_float16_rounding(stored: np.ndarray, exact: np.ndarray) -> None:
    """float16 files hold the float32 gates rounded to float16: at most one float16 ulp
    away, give or take the 1e-6 by which chunked float32 values may differ from the
    whole-sequence ones (that can move a rounding by one)."""
    assert stored.dtype == np.float16
    ulp = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    assert (np.abs(stored.astype(np.float64) - exact) <= ulp + 1e-6).all()


@pytest.mark.parametrize("fmt", ["h5", "npy"])
def test_files_equal_in_memory_capture(rng, tmp_path, fmt):
    samples, time, features = 4, int(rng.integers(30, 60)), 3
    model = stacked_model(rng, features)
    x, _ = holed_inputs(rng, samples, time, features)
    chunk = int(rng.integers(3, 11))
    expected = capture(model, x)

    path = tmp_path / ("g.h5" if fmt == "h5" else "g")
    result = capture_to_file(model, x, path, chunk_steps=chunk, format=fmt)
    path16 = tmp_path / ("g16.h5" if fmt == "h5" else "g16")
    capture_to_file(model, x, path16, chunk_steps=chunk, format=fmt, dtype="float16")

    assert result.keys == ["low", "high"]
    assert (result.samples, result.timesteps) == (samples, time)
    stored, stored16 = load_gates(path, mmap=False), load_gates(path16, mmap=False)
    for key in expected:
        for name in GATES:
            assert stored[key][name].dtype == np.float32
            np.testing.assert_allclose(stored[key][name], expected[key][name], atol=1e-6)
            within_float16_rounding(stored16[key][name], expected[key][name])


def test_single_layer_with_mask_against_the_oracle(rng, tmp_path):
    layer = keras.layers.GRU(9, reset_after=bool(rng.integers(2)))
    layer.build((None, None, 4))
    layer.set_weights([rng.normal(size=w.shape) * 0.5 for w in layer.get_weights()])
    x = rng.normal(size=(3, 41, 4)).astype(np.float32)
    mask = rng.random((3, 41)) > 0.3

    result = capture_to_file(layer, x, tmp_path / "g.npy.d", chunk_steps=8, mask=mask)

    stored = load_gates(tmp_path / "g.npy.d")[layer.name]
    assert isinstance(stored["update"], np.memmap)
    assert_gates_close(stored, on_input_time(gru_ref(layer, x, mask), False), 1e-5)
    # the statistics leave masked steps out
    z = stored["update"][mask].astype(np.float64)
    stats = result.stats[layer.name].per_unit()["update"]
    np.testing.assert_allclose(stats["mean"], z.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["std"], z.std(axis=0), rtol=1e-7, atol=1e-12)


def test_stream_of_uneven_chunks(rng, tmp_path):
    model = stacked_model(rng, 2)
    x, _ = holed_inputs(rng, 1, 47, 2)
    cuts = np.sort(rng.choice(np.arange(1, 47), size=5, replace=False))
    pieces = np.split(x, cuts, axis=1)
    expected = capture(model, x)

    def chunks():  # a generator function: a callable that yields chunks
        yield from pieces

    result = capture_to_file(model, chunks, tmp_path / "s.h5", chunk_steps=6)
    npy = capture_to_file(model, iter(pieces), tmp_path / "s", chunk_steps=6, format="npy")

    assert result.timesteps == npy.timesteps == 47
    for path in (tmp_path / "s.h5", tmp_path / "s"):
        stored = load_gates(path, mmap=False)
        for key in expected:
            assert_gates_close(stored[key], expected[key], 1e-6, str(path))
    two = np.concatenate([x, x])
    with pytest.raises(ValueError, match="one sample"):
        capture_to_file(model, iter([two]), tmp_path / "bad", format="npy")


def test_stats_only_run(rng):
    model = stacked_model(rng, 3)
    x, valid = holed_inputs(rng, 2, 33, 3)
    stats = stream_stats(model, x, chunk_steps=5)
    gates = capture(model, x)
    for key in ("low", "high"):
        summary = stats[key].summary()
        for name in GATES:
            values = gates[key][name][valid]
            assert np.isclose(summary[name]["mean"], values.mean(), rtol=1e-6)
            assert np.isclose(summary[name]["std"], values.std(), rtol=1e-5)


def test_what_cannot_be_chunked_is_refused(rng, tmp_path):
    x = rng.normal(size=(1, 10, 3)).astype(np.float32)
    inputs = keras.Input((None, 3))
    normed = keras.layers.LayerNormalization()(keras.layers.Dense(4)(inputs))
    fine = keras.Model(inputs, keras.layers.GRU(2, name="g")(normed))  # per-step: accepted
    randomize(fine, rng)
    stats = stream_stats(fine, x, chunk_steps=3)["g"].per_unit()["update"]["mean"]
    np.testing.assert_allclose(stats, capture(fine, x)["g"]["update"][0].mean(0), atol=1e-5)

    bi = keras.Model(inputs, keras.layers.Bidirectional(keras.layers.GRU(2))(inputs))
    with pytest.raises(CaptureError, match="backwards.*gategru.capture"):
        capture_to_file(bi, x, None)
    back = keras.layers.GRU(2, go_backwards=True)
    back.build((None, None, 3))
    with pytest.raises(CaptureError, match="backwards"):
        capture_to_file(back, x, None)
    conv = keras.layers.Conv1D(4, 3, padding="same", name="conv")(inputs)
    mixed = keras.Model(inputs, keras.layers.GRU(2)(conv))
    with pytest.raises(CaptureError, match="'conv'.*mixes time steps"):
        capture_to_file(mixed, x, None)
    last = keras.layers.GRU(3, name="last")(inputs)
    repeated = keras.layers.RepeatVector(4)(last)
    after_last = keras.Model(inputs, keras.layers.GRU(2)(repeated))
    with pytest.raises(CaptureError, match="mixes time steps"):
        capture_to_file(after_last, x, None)


def test_model_unchanged_by_streaming(rng, tmp_path):
    model = stacked_model(rng, 3)
    x, _ = holed_inputs(rng, 2, 20, 3)
    before = model.predict(x, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    config = model.to_json()
    capture_to_file(model, x, tmp_path / "g.h5", chunk_steps=7)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert model.to_json() == config
    model.save(tmp_path / "m.keras")  # still saves (extra calls of its layers stay outside)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, tempfile
    import keras, numpy as np
    from gategru import capture_to_file

    steps, chunk, units = int(sys.argv[1]), 4096, 128
    checkpoints = {}

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def chunks():  # generated on the fly: the inputs never sit in memory
        rng = np.random.default_rng(0)
        for start in range(0, steps, chunk):
            if start == steps // 5 // chunk * chunk:
                checkpoints["early"] = peak_mb()
            yield rng.normal(size=(1, chunk, 8)).astype(np.float32)

    layer = keras.layers.GRU(units)
    layer.build((None, None, 8))
    with tempfile.TemporaryDirectory() as folder:
        result = capture_to_file(layer, chunks, folder + "/g.h5", chunk_steps=chunk,
                                 progress=False)
    checkpoints["end"] = peak_mb()
    checkpoints["steps"] = result.timesteps
    checkpoints["steps_per_second"] = result.steps_per_second
    print(json.dumps(checkpoints))
    """
)


def test_peak_memory_does_not_grow_with_length(tmp_path):
    steps = 1 << 20  # 1M steps of 128 units: 1.5 GiB of float32 gates on disk
    script = tmp_path / "memory.py"
    script.write_text(_MEMORY_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, str(script), str(steps)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["steps"] == steps
    gate_bytes = steps * 128 * 3 * 4
    growth_mb = report["end"] - report["early"]
    # From 1/5 of the run to its end the gate data grows by ~1.2 GiB; the peak must not.
    assert growth_mb < 50, (report, gate_bytes)
