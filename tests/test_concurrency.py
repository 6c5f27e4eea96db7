"""The op under concurrent use and repetition: identical results, no memory growth."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import tensorflow as tf

from gategru import gru_sequence


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


def test_parallel_ops_in_one_graph(rng):
    """Independent op calls in one tf.function run on TF's inter-op pool concurrently."""
    problems = [make_args(rng) for _ in range(6)]

    @tf.function
    def all_at_once():
        return [gru_sequence(*p).h_seq for p in problems]

    expected = [gru_sequence(*p).h_seq.numpy() for p in problems]
    for _ in range(3):
        for e, g in zip(expected, all_at_once(), strict=True):
            np.testing.assert_array_equal(g.numpy(), e)


def test_repeated_calls_do_not_grow_memory(tmp_path):
    """1000 forward+backward calls; RSS measured in a fresh process after warm-up."""
    script = textwrap.dedent("""
        import resource, numpy as np, tensorflow as tf
        from gategru import gru_sequence
        rng = np.random.default_rng()
        args = [tf.constant(rng.normal(size=s).astype(np.float32))
                for s in [(4, 50, 96), (4, 32), (32, 96), (96,)]]
        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(args)
                out = gru_sequence(*args)
                loss = tf.reduce_sum(out.h_seq) + tf.reduce_sum(out.update)
            return tape.gradient(loss, args)
        for _ in range(100):
            step()
        before = rss_mb()
        for _ in range(1000):
            step()
        print("RSS_GROWTH_MB", rss_mb() - before)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RSS_GROWTH_MB")]
    assert lines, result.stderr[-2000:]
    growth = float(lines[0].split()[1])
    assert growth < 20, f"RSS grew by {growth:.1f} MB over 1000 calls"
