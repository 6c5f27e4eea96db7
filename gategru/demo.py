"""A small end-to-end demo: train a GateGRU on a task that needs memory, then draw its gates.

The task: channel 0 carries sparse random spikes ("events") in noise, channel 1 a slow
sinusoid. The target at every step is a leaky running sum of the events whose memory is
long while the sinusoid is positive and short while it is negative, so the network has to
hold state and learn when to let it go: exactly what the update gate z controls.

The model is trained on its main output only; the gates are model outputs with no loss
(the "seed story": gates come along for free, they do not change what is learnt).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

# Memory per step of the target's leaky sum: long while the sinusoid is up, short while down.
HOLD_DECAY = 0.97
FORGET_DECAY = 0.75


def make_dataset(
    samples: int, timesteps: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (samples, timesteps, 2) and targets (samples, timesteps, 1), float32."""
    rng = np.random.default_rng(seed)
    steps = np.arange(timesteps)
    spikes = (rng.random((samples, timesteps)) < 0.05) * rng.uniform(0.5, 1.5, (samples, timesteps))
    signal = spikes + rng.normal(0.0, 0.1, (samples, timesteps))
    period = rng.uniform(30.0, 70.0, (samples, 1))
    phase = rng.uniform(0.0, 2 * np.pi, (samples, 1))
    slow = np.sin(2 * np.pi * steps / period + phase)

    decay = np.where(slow > 0, HOLD_DECAY, FORGET_DECAY)
    target = np.zeros((samples, timesteps))
    level = np.zeros(samples)
    for t in range(timesteps):  # a recurrence: no closed form with a varying decay
        level = decay[:, t] * level + spikes[:, t]
        target[:, t] = level

    inputs = np.stack([signal, slow], axis=-1).astype(np.float32)
    return inputs, target[..., None].astype(np.float32)


def build_model(units: int = 32, timesteps: int = 100, features: int = 2) -> tuple[Any, Any]:
    """(trainable model with outputs [out, reset, update], model from inputs to all gates)."""
    import keras

    from gategru import GateGRU

    inputs = keras.Input((timesteps, features), name="inputs")
    seq, gates = GateGRU(units, return_sequences=True, return_gates=True, name="gru")(inputs)
    out = keras.layers.Dense(1, name="out")(seq)  # Dense maps the last axis of (B, T, units)
    # Identity layers give the gate tensors output names, so fit/predict can refer to them.
    reset = keras.layers.Identity(name="reset")(gates["reset"])
    update = keras.layers.Identity(name="update")(gates["update"])
    model = keras.Model(inputs, [out, reset, update], name="gategru_demo")
    gate_model = keras.Model(inputs, gates, name="gategru_demo_gates")
    return model, gate_model


def run_demo(
    out_dir: str | os.PathLike = "gategru_out",
    epochs: int = 12,
    seed: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Trains the demo model, prints its losses and gate summary, and saves its gates.

    Writes ``out_dir/gates.png`` (heatmaps of one held-out sample) and ``out_dir/gates.npz``
    (update, reset, candidate and inputs of the held-out samples).

    Returns:
      ``{"first_loss", "final_loss", "heldout_loss", "baseline_loss", "losses", "summary",
      "png", "npz", "seconds"}``; losses are training MSEs on the normalized target,
      ``baseline_loss`` the MSE of predicting the training mean on the held-out samples.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    start = time.perf_counter()
    out_dir = os.fspath(out_dir)
    # Fail before training, not after it, when the pictures cannot be written.
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"output path {out_dir!r} exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise PermissionError(f"output directory {out_dir!r} is not writable")

    import keras

    from gategru.plotting import format_summary, gate_summary, plot_gates

    def say(message: str) -> None:
        if not quiet:
            print(message, flush=True)

    keras.utils.set_random_seed(seed)  # weight initialisation and shuffling
    x, y = make_dataset(1024 + 128, seed=seed)
    scale = float(y[:1024].std())  # unit-variance target: losses read as fractions
    y = y / scale
    x_train, y_train, x_test, y_test = x[:1024], y[:1024], x[1024:], y[1024:]

    model, gate_model = build_model(timesteps=x.shape[1], features=x.shape[2])
    # No loss on the gate outputs: they need no targets and add nothing to the gradient.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=["mse", None, None])

    losses: list[float] = []

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            losses.append(float((logs or {})["loss"]))
            say(f"epoch {epoch + 1:3d}/{epochs}  loss {losses[-1]:.4f}")

    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0, callbacks=[_Report()])

    predicted = np.asarray(model.predict(x_test, batch_size=128, verbose=0)[0])
    heldout = float(np.mean((predicted - y_test) ** 2))
    baseline = float(np.mean((y_train.mean() - y_test) ** 2))
    say(f"held-out loss {heldout:.4f} (predicting the mean: {baseline:.4f})")

    shown = x_test[:8]
    gates = {k: np.asarray(v) for k, v in gate_model.predict(shown, verbose=0).items()}
    summary = gate_summary(gates)
    say("gates on 8 held-out samples:\n" + format_summary(summary))

    png = os.path.join(out_dir, "gates.png")
    npz = os.path.join(out_dir, "gates.npz")
    plot_gates(
        gates,
        inputs=shown,
        sample=0,
        path=png,
        title="GateGRU(32) on a held-out sample: spikes to remember (input 0), "
        "memory long while input 1 > 0",
    )
    np.savez_compressed(npz, inputs=shown, **gates)

    return {
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "heldout_loss": heldout,
        "baseline_loss": baseline,
        "losses": losses,
        "summary": summary,
        "png": png,
        "npz": npz,
        "seconds": time.perf_counter() - start,
    }
