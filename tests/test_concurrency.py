"""The op under concurrent use and repetition: identical results, no memory growth."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import tensorflow as tf

from gategru import gru_sequence
from gategru.reference import gru_sequence_reference


def make_args(rng, batch=8, time=40, units=48):
    return [tf.constant(rng.normal(size=s).astype(np.float32)) for s in
            [(batch, time, 3 * units), (batch, units), (units, 3 * units), (3 * units,)]]


def forward_backward(args):
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = gru_sequence(*args)
        loss = tf.reduce_sum(out.h_seq ** 2) + tf.reduce_sum(out.reset)
    return [out.h_seq.numpy(), *(g.numpy() for g in tape.gradient(loss, args))]


def test_python_threads_get_identical_results(rng):
    problems = [make_args(rng) for _ in range(4)]
    expected = [forward_backward(p) for p in problems]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                got = forward_backward(problems[i % 4])
                results.setdefault(i, []).append(got)
        except BaseException as err:  # surfaced below with the thread's index
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, runs in results.items():
        for got in runs:
            for e, g in zip(expected[i % 4], got, strict=True):
                np.testing.assert_array_equal(g, e)


INTER_OP, INTRA_OP = 4, 2

# Runs in a fresh process: the thread pools are fixed when TensorFlow initializes.
PARALLEL = textwrap.dedent(f"""
    import collections, os, sys
    import numpy as np, tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads({INTER_OP})
    tf.config.threading.set_intra_op_parallelism_threads({INTRA_OP})
    from gategru import gru_sequence

    data = np.load(sys.argv[1])
    problems = [[tf.constant(data[f"{{i}}_{{j}}"]) for j in range(4)]
                for i in range(int(data["count"]))]

    def forward_backward(args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = gru_sequence(*args)
            loss = tf.reduce_sum(out.h_seq ** 2) + tf.reduce_sum(out.reset)
        return [out.h_seq, out.reset, *tape.gradient(loss, args)]

    # Independent forward+backward chains in one graph: TF's inter-op pool may run them
    # at the same time, each op sharing the intra-op pool with the others.
    all_at_once = tf.function(lambda: [forward_backward(p) for p in problems])
    one = tf.function(forward_backward)

    results = {{}}
    for run in range(3):
        for i, outs in enumerate(all_at_once()):
            for j, o in enumerate(outs):
                results[f"together{{run}}_{{i}}_{{j}}"] = o.numpy()
    for i, p in enumerate(problems):  # the same ops, one problem per call
        for j, o in enumerate(one(p)):
            results[f"alone_{{i}}_{{j}}"] = o.numpy()
    names = collections.Counter(open(f"/proc/self/task/{{t}}/comm").read().strip()
                                for t in os.listdir("/proc/self/task"))
    results["inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    results["intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
    results["compute_threads"] = names["tf_Compute"]  # TF's inter-op pool
    np.savez(sys.argv[2], **results)
""")


def reference_loss(args) -> float:
    """The loss forward_backward differentiates, in float64 numpy."""
    ref = gru_sequence_reference(*args)
    return float((ref.h_seq ** 2).sum() + ref.reset.sum())


def test_parallel_ops_in_one_graph_with_explicit_pools(rng, tmp_path):
    """Several independent forward+backward op chains in one tf.function, with 4 inter-op
    and 2 intra-op threads, give bit for bit what each gives run alone, and the right
    values (float64 numpy oracle: forward outputs, and each gradient along a random
    direction against a central difference)."""
    shapes = [(8, 40, 48), (5, 33, 40), (12, 24, 32), (8, 40, 48), (3, 50, 64), (16, 20, 24)]
    problems = []
    for batch, time, units in shapes:
        problems.append([rng.normal(size=(batch, time, 3 * units)).astype(np.float32),
                         rng.normal(size=(batch, units)).astype(np.float32),
                         (rng.normal(size=(units, 3 * units)) / np.sqrt(units)).astype(
                             np.float32),
                         rng.normal(scale=0.5, size=3 * units).astype(np.float32)])
    data = {f"{i}_{j}": a for i, p in enumerate(problems) for j, a in enumerate(p)}
    np.savez(tmp_path / "problems.npz", count=len(problems), **data)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", PARALLEL, str(tmp_path / "problems.npz"),
                             str(tmp_path / "results.npz")], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "results.npz")
    assert int(got["inter_op"]) == INTER_OP and int(got["intra_op"]) == INTRA_OP
    assert int(got["compute_threads"]) == INTER_OP, "the inter-op pool has another size"

    for i, args in enumerate(problems):
        alone = [got[f"alone_{i}_{j}"] for j in range(6)]
        for run in range(3):
            for j in range(6):
                np.testing.assert_array_equal(got[f"together{run}_{i}_{j}"], alone[j],
                                              err_msg=f"problem {i}, output {j}, run {run}")
        ref = gru_sequence_reference(*args)
        np.testing.assert_allclose(alone[0], ref.h_seq, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(alone[1], ref.reset, rtol=1e-4, atol=1e-5)
        for j, grad in enumerate(alone[2:]):
            direction = rng.normal(size=args[j].shape)
            step = 1e-4
            plus = [a if k != j else a + step * direction for k, a in enumerate(args)]
            minus = [a if k != j else a - step * direction for k, a in enumerate(args)]
            numeric = (reference_loss(plus) - reference_loss(minus)) / (2 * step)
            analytic = float((grad.astype(np.float64) * direction).sum())
            assert abs(analytic - numeric) <= 1e-3 * (1 + abs(numeric)), (i, j, analytic,
                                                                           numeric)


LEAK_CHECK = textwrap.dedent("""
    import resource, sys, numpy as np, tensorflow as tf
    from gategru import gru_sequence
    rng = np.random.default_rng()
    # 8 rows: one leaked h_seq per call would be 51 MB over 1000 calls, xw's gradient 154 MB.
    args = [tf.constant(rng.normal(size=s).astype(np.float32))
            for s in [(8, 50, 96), (8, 32), (32, 96), (96,)]]
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    def step():
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = gru_sequence(*args)
            loss = tf.reduce_sum(out.h_seq) + tf.reduce_sum(out.update)
        grads = tape.gradient(loss, args)
        return out.h_seq, grads
    if sys.argv[1] == "graph":
        step = tf.function(step)
    for _ in range(100):
        step()
    before = rss_mb()
    for _ in range(1000):
        h_seq, grads = step()
    assert all(g is not None and g.shape == a.shape for g, a in zip(grads, args))
    assert np.isfinite(h_seq.numpy()).all() and np.abs(h_seq.numpy()).max() > 0
    print("RSS_GROWTH_MB", rss_mb() - before)
""")


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_repeated_calls_do_not_grow_memory(tmp_path, mode):
    """1000 forward+backward calls, in a tf.function or eagerly; RSS measured in a fresh
    process after warm-up."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", LEAK_CHECK, mode], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RSS_GROWTH_MB")]
    assert result.returncode == 0 and lines, result.stderr[-2000:]
    growth = float(lines[0].split()[1])
    assert growth < 20, f"RSS grew by {growth:.1f} MB over 1000 {mode} calls"
