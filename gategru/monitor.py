"""``GateMonitor``: a Keras callback that logs the gates of a model's GRU layers to
TensorBoard while it trains."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from gategru.plotting import GATE_NAMES, SATURATION
from gategru.probe import GateProbe
from gategru.stats import GateStats

# Natural ranges (sigmoid, tanh): fixed bin edges keep the epochs comparable.
_RANGES = {"update": (0.0, 1.0), "reset": (0.0, 1.0), "candidate": (-1.0, 1.0)}


def _metadata(plugin: str) -> summary_pb2.SummaryMetadata:
    # TensorBoard's scalar and histogram plugins read these names; their version-0
    # plugin data serialises to empty bytes. Written through core tf.summary.write, so
    # logging works without the tensorboard package (which only views the logs).
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=b"")
    )


def write_histogram(tag: str, values: np.ndarray, step: int, bins: int, value_range: tuple):
    """A TensorBoard histogram: a (bins, 3) tensor of left edge, right edge, count."""
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    buckets = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    tf.summary.write(tag, tf.constant(buckets, tf.float64), step, metadata=_metadata("histograms"))


def write_scalar(tag: str, value: float, step: int) -> None:
    tf.summary.write(tag, tf.constant(value, tf.float32), step, metadata=_metadata("scalars"))


class GateMonitor(keras.callbacks.Callback):
    """Every ``every`` epochs, runs ``inputs`` through the model's GRU layers and logs
    their gates to TensorBoard.

    Args:
      log_dir: where the event files go (``tensorboard --logdir`` on it, or on a parent).
      inputs: a fixed batch the model takes (an array, or a list/dict of arrays).
      every: log after every N-th epoch (1: every epoch).
      bins: histogram bins over the gate's range ([0, 1] for z and r, [-1, 1] for h̃).
      saturation: distance from a bound that counts as saturated.
      batch_size: samples per forward pass when ``inputs`` is large (default: all).

    Tags, for each GRU layer ``<layer>`` (``<name>/forward`` and ``<name>/backward`` in a
    Bidirectional) and gate ``<gate>`` in update, reset, candidate:
    ``<layer>/<gate>/histogram``, ``<layer>/<gate>/mean``, ``<layer>/<gate>/std``,
    ``<layer>/<gate>/saturated_low`` (fraction below ``saturation``; below
    ``-1 + saturation`` for the candidate) and ``<layer>/<gate>/saturated_high`` (above
    ``1 - saturation``). Masked steps are left out. The step is the epoch (from 0).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        inputs: object,
        every: int = 1,
        bins: int = 30,
        saturation: float = SATURATION,
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if int(bins) < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        self.log_dir = os.fspath(log_dir)
        self.inputs = inputs
        self.every = int(every)
        self.bins = int(bins)
        self.saturation = float(saturation)
        self.batch_size = batch_size
        self._probe: GateProbe | None = None
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every == 0:
            self.log_gates(epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def log_gates(self, step: int) -> None:
        """Runs the batch through the GRUs now and writes the summaries at ``step``."""
        if self._probe is None or self._probe.model is not self.model:
            self._probe = GateProbe(self.model)  # built lazily: the model is built by now
        self._probe.sync()  # the twins hold copies of weights that training has changed
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

        parts: dict[str, list] = {key: [] for key in self._probe.keys}
        stats = {key: GateStats(self.saturation) for key in self._probe.keys}
        for _, output in self._probe.iter_batches(self.inputs, self.batch_size, False):
            for key, gates in output.gates.items():
                mask = output.masks.get(key)
                stats[key].update(gates, mask)
                keep = slice(None) if mask is None else mask
                parts[key].append({name: gates[name][keep] for name in GATE_NAMES})

        with self._writer.as_default():
            for key in self._probe.keys:
                summary = stats[key].per_unit()
                for name in GATE_NAMES:
                    values = np.concatenate([p[name].reshape(-1) for p in parts[key]])
                    if values.size == 0:
                        continue  # every step masked: nothing to show
                    tag = f"{key}/{name}"
                    write_histogram(f"{tag}/histogram", values, step, self.bins, _RANGES[name])
                    per_unit = summary[name]
                    write_scalar(f"{tag}/mean", float(values.mean()), step)
                    write_scalar(f"{tag}/std", float(values.std()), step)
                    write_scalar(f"{tag}/saturated_low", float(per_unit["low"].mean()), step)
                    write_scalar(f"{tag}/saturated_high", float(per_unit["high"].mean()), step)
        self._writer.flush()
