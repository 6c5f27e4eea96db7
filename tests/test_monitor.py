"""GateMonitor writes the expected TensorBoard tags, with values that match the gates of
the trained model."""

from __future__ import annotations

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf
from gate_oracles import GATES, padded_inputs

from gategru import GateMonitor, capture


def read_events(log_dir: str) -> dict[str, dict[int, tuple[str, np.ndarray]]]:
    """{tag: {step: (plugin name, value)}} from every event file under log_dir."""
    events: dict[str, dict[int, tuple[str, np.ndarray]]] = {}
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                events.setdefault(value.tag, {})[event.step] = (
                    plugin,
                    tf.make_ndarray(value.tensor),
                )
    return events


def test_tags_steps_and_values(rng, tmp_path):
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    x, mask = padded_inputs(rng, 32, 12, 3)
    y = rng.normal(size=(32, 1)).astype(np.float32)
    inputs = keras.Input((None, 3))
    h = keras.layers.Masking()(inputs)
    h = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True), name="bi")(h)
    h = keras.layers.GRU(4, name="top")(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    batch = x[:8]
    monitor = GateMonitor(tmp_path / "logs", batch, every=2, bins=20)

    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[monitor])

    events = read_events(str(tmp_path / "logs"))
    keys = ["bi/forward", "bi/backward", "top"]
    stats = ["histogram", "mean", "std", "saturated_low", "saturated_high"]
    assert set(events) == {f"{k}/{g}/{s}" for k in keys for g in GATES for s in stats}
    assert all(set(steps) == {1, 3} for steps in events.values())  # after epochs 2 and 4

    final = capture(model, batch)  # the weights the last log saw
    valid = mask[:8]
    for key in keys:
        for gate in GATES:
            values = final[key][gate][valid].astype(np.float64)
            plugin, histogram = events[f"{key}/{gate}/histogram"][3]
            assert plugin == "histograms" and histogram.shape == (20, 3)
            assert histogram[:, 2].sum() == values.size  # masked steps left out
            low = (-1.0 if gate == "candidate" else 0.0) + 0.05
            plugin, logged_low = events[f"{key}/{gate}/saturated_low"][3]
            assert plugin == "scalars"
            assert np.isclose(logged_low, (values < low).mean(), atol=1e-6)
            high = events[f"{key}/{gate}/saturated_high"][3][1]
            assert np.isclose(high, (values > 0.95).mean(), atol=1e-6)
            assert np.isclose(events[f"{key}/{gate}/mean"][3][1], values.mean(), atol=1e-5)
            assert np.isclose(events[f"{key}/{gate}/std"][3][1], values.std(), atol=1e-5)
    # the logs follow training: the gates moved between the two logged epochs
    moved = [
        not np.isclose(events[f"top/{g}/mean"][1][1], events[f"top/{g}/mean"][3][1])
        for g in GATES
    ]
    assert any(moved)


def test_bad_arguments(rng):
    batch = rng.normal(size=(1, 2, 3))
    with pytest.raises(ValueError, match="every"):
        GateMonitor("logs", batch, every=0)
    with pytest.raises(ValueError, match="bins"):
        GateMonitor("logs", batch, bins=0)
