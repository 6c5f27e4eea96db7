"""MultiWorkerMirroredStrategy: two worker processes on loopback train a GateGRU model, each
on its own shard of the data, and end where one process training on both shards ends.

Each worker reads a different shard (the input context's pipeline id is its task index), so
the two can only end with the same weights if their gradients were all-reduced; with SGD,
the same initial weights and equal per-worker batches, the mean of the two workers' mean
gradients is the gradient of the whole global batch, so a single process that trains on
the union of the shards, global batch by global batch, must reach the same weights.

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
import time

import numpy as np

# The problem, shared by the workers (as source) and the in-process reference (exec'd).
# Global batch k holds the samples [k*GLOBAL, (k+1)*GLOBAL); worker w's share of it is the
# half [k*GLOBAL + w*PER_WORKER, k*GLOBAL + (w+1)*PER_WORKER), which is what
# batch(PER_WORKER).shard(2, w) gives.
COMMON = textwrap.dedent("""
import numpy as np
import keras
import gategru

WORKERS, PER_WORKER, STEPS_PER_EPOCH, EPOCHS = 2, 16, 4, 2
GLOBAL = WORKERS * PER_WORKER
TIME, FEATURES, UNITS, LEARNING_RATE = 12, 3, 8, 0.1


def make_problem(seed):
    rng = np.random.default_rng(seed)
    n = STEPS_PER_EPOCH * GLOBAL
    x = rng.normal(size=(n, TIME, FEATURES)).astype("float32")
    y = np.tanh(x[:, :, :1].mean(axis=1) * 2 + x[:, -1, 1:2]).astype("float32")
    return np.arange(n, dtype="int64"), x, y


def make_model(seed):
    model = keras.Sequential([keras.Input((TIME, FEATURES)), gategru.GateGRU(UNITS),
                              keras.layers.Dense(1)])
    # Initial weights drawn here, not by Keras's initializers: the same in every process.
    rng = np.random.default_rng(seed + 1)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype("float32")
                       for w in model.get_weights()])
    return model
""")

WORKER = COMMON + textwrap.dedent("""
import json, os, sys
import tensorflow as tf

seed = int(sys.argv[1])
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
assert strategy.num_replicas_in_sync == WORKERS, strategy.num_replicas_in_sync
ids, x, y = make_problem(seed)


def dataset_fn(context):
    assert context.num_input_pipelines == WORKERS, context.num_input_pipelines
    assert context.input_pipeline_id == index, (context.input_pipeline_id, index)
    assert context.get_per_replica_batch_size(GLOBAL) == PER_WORKER
    return (tf.data.Dataset.from_tensor_slices((ids, x, y)).batch(PER_WORKER)
            .shard(context.num_input_pipelines, context.input_pipeline_id))


data = strategy.distribute_datasets_from_function(dataset_fn)
with strategy.scope():
    model = make_model(seed)
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.build(model.trainable_variables)


@tf.function
def train_step(xb, yb):
    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(xb, training=True) - yb) ** 2)
            scaled = loss / strategy.num_replicas_in_sync
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss
    return strategy.reduce("MEAN", strategy.run(replica_step, args=(xb, yb)), axis=None)


losses, seen = [], []
for epoch in range(EPOCHS):
    total = []
    for idb, xb, yb in data:
        (local_ids,) = strategy.experimental_local_results(idb)
        seen.append(local_ids.numpy().tolist())
        total.append(float(train_step(xb, yb)))
    losses.append(sum(total) / len(total))
print("RESULT", json.dumps({"loss": losses, "seen": seen,
                            "replicas": strategy.num_replicas_in_sync,
                            "weights": [w.tolist() for w in model.get_weights()]}))
""")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def train_alone(ns: dict, seed: int, batches) -> list[np.ndarray]:
    """The reference: one process, no strategy, plain SGD over the given batches."""
    import keras
    import tensorflow as tf

    model = ns["make_model"](seed)
    optimizer = keras.optimizers.SGD(ns["LEARNING_RATE"])

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(xb, training=True) - yb) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    for _ in range(ns["EPOCHS"]):
        for xb, yb in batches:
            step(tf.constant(xb), tf.constant(yb))
    return model.get_weights()


def test_two_workers_on_different_shards_match_one_process_on_both(tmp_path, seed):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs, logs = [], []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        logs.append((tmp_path / f"worker{index}.out", tmp_path / f"worker{index}.err"))
        with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(seed)],
                                          cwd=tmp_path, env=env, stdout=out, stderr=err))
    try:
        # The reference trains here while the workers start up.
        ns: dict = {}
        exec(COMMON, ns)
        ids, x, y = ns["make_problem"](seed)
        per, total = ns["PER_WORKER"], ns["GLOBAL"]
        steps, epochs = ns["STEPS_PER_EPOCH"], ns["EPOCHS"]
        union = train_alone(ns, seed, [(x[k * total:(k + 1) * total],
                                        y[k * total:(k + 1) * total]) for k in range(steps)])
        shard0 = train_alone(ns, seed, [(x[k * total:k * total + per],
                                         y[k * total:k * total + per]) for k in range(steps)])
        # A worker that fails leaves the other waiting for it in a collective: stop at once.
        deadline = time.monotonic() + 240
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
        states = ["still running" if p.poll() is None else f"exit {p.poll()}" for p in procs]
        report = "\n".join(f"worker {i}: {state}\n{err.read_text()[-2000:]}"
                           for i, (state, (_, err)) in enumerate(zip(states, logs, strict=True)))
        assert all(p.poll() == 0 for p in procs), report
        results = []
        for out, _ in logs:
            lines = [line for line in out.read_text().splitlines()
                     if line.startswith("RESULT ")]
            assert lines, report
            results.append(json.loads(lines[0][len("RESULT "):]))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    for index, result in enumerate(results):
        assert result["replicas"] == 2
        assert result["loss"][-1] < result["loss"][0], result["loss"]  # it trained
        # Worker w read exactly its half of every global batch, once per epoch.
        expected = [list(range(k * total + index * per, k * total + (index + 1) * per))
                    for k in range(steps)] * epochs
        assert result["seen"] == expected
    seen = [set(sum(r["seen"], [])) for r in results]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(ids.tolist())

    first, second = ([np.asarray(w, np.float32) for w in r["weights"]] for r in results)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)  # the same all-reduced gradient on both
    for got, want in zip(first, union, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Training on one shard alone ends far from there: the comparison above discriminates.
    assert max(float(np.abs(a - b).max()) for a, b in zip(first, shard0, strict=True)) > 1e-3
