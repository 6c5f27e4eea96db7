"""MultiWorkerMirroredStrategy: two worker processes on loopback train a GateGRU model.

A custom training loop, not model.fit: Keras 3.15's fit() under this strategy fails on the
CPU before any layer runs (its symbolic build reduces a PerReplica batch), for
keras.layers.GRU as much as for GateGRU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent("""
import json
import numpy as np, tensorflow as tf, keras
import gategru
strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)  # same data on both workers; each reads its shard
x = rng.normal(size=(64, 12, 3)).astype("float32")
y = x[:, :, :1].sum(axis=1)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
with strategy.scope():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((12, 3)), gategru.GateGRU(8), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
@tf.function
def train_step(batch):
    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(xb, training=True) - yb) ** 2)
            scaled = loss / strategy.num_replicas_in_sync
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss
    return strategy.reduce("MEAN", strategy.run(replica_step, args=batch), axis=None)
losses = []
for epoch in range(3):
    total = [float(train_step(b)) for b in strategy.experimental_distribute_dataset(data)]
    losses.append(sum(total) / len(total))
checksum = float(sum(np.abs(w).sum() for w in model.get_weights()))
print("RESULT", json.dumps({"loss": losses, "checksum": checksum}))
""")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_in_lockstep(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert proc.returncode == 0 and lines, err[-3000:]
            results.append(json.loads(lines[0][len("RESULT "):]))
    finally:
        for proc in procs:
            proc.kill()
    first, second = results
    assert first["loss"][-1] < first["loss"][0]  # it trained
    assert abs(first["checksum"] - second["checksum"]) < 1e-4  # replicas stayed in sync
