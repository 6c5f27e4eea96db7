#!/usr/bin/env python3
"""CPU benchmark: GateGRU against the GRUs a user would otherwise pick, side by side in one run.

Variants (forward = inference; train = forward + backward w.r.t. the weights and the inputs):
  gategru_gates    GateGRU(return_gates=True)                              forward, train
  gategru_nogates  GateGRU(return_gates=False)                             forward, train
  keras_gru        keras.layers.GRU                                        forward, train
  keras_cell       keras.layers.RNN over a GRUCell returning concat[h,z,r,h̃]   forward, train
  keras_recompute  keras.layers.GRU, then z, r, h̃ recomputed from its outputs  forward
  torch_gru        torch.nn.GRU (if PyTorch is installed)                  forward, train
  onednn_gru       oneDNN lbr_gru_forward, bench/onednn_gru.cc (if the onednn-devel-cpu-gomp
                   package is installed and g++ exists)                    forward
  onednn_gru_avx2  the same, capped at AVX2 (only where the CPU has more)  forward

--reset-after false times the reset_after=False GRU (r applied to h before U_h): the GateGRU
and Keras variants only. Keras variants run inside tf.function. Repeats are interleaved in
rounds across the variants (the machines here are shared: a slow spell then hits every
variant, not one), and the median is reported. Ratios are only meaningful within one run.
Writes cpu-<date>.json/.md/.png.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _threads_from_argv(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return os.cpu_count() or 1


# Thread pools read these when numpy (OpenBLAS), torch and oneDNN (OpenMP) load: set them first.
THREADS = _threads_from_argv(sys.argv)
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(THREADS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(THREADS)
tf.config.threading.set_inter_op_parallelism_threads(THREADS)

import keras  # noqa: E402
from cpu_bench_keras import keras_benches  # noqa: E402
from cpu_bench_peers import (  # noqa: E402
    OneDnnServer,
    build_onednn,
    load_torch,
    onednn_benches,
    onednn_package_version,
    torch_benches,
)
from cpu_bench_report import markdown, plot  # noqa: E402
from cpu_bench_spec import (  # noqa: E402
    FLOPS_FORMULA,
    MEMORY_NOTE,
    QUICK_SHAPES,
    REFERENCE,
    SHAPES,
    VARIANTS,
    gru_flops,
    targets,
)
from cpu_bench_timing import Bench, tf_sync  # noqa: E402

import gategru  # noqa: E402
from gategru import _kernels as _gategru_kernels  # noqa: E402


# ---- memory: peak resident set size around one call ------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _return_freed_memory_to_os() -> bool:
    """Makes every large allocation an mmap that is unmapped on free, so each call's buffers
    show up in RSS. Changes allocation speed, hence only after all timings."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, which disables the dynamic one
        libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _tf_allocator_bytes() -> tuple[int, int] | None:
    """(in use, peak) of TF's CPU allocator, or None where it keeps no statistics. (With oneDNN
    opts on, TF allocates through a pool that RSS does not see shrink, but it counts bytes.)"""
    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError):
        return None
    return info["current"], info["peak"]


def measure_memory(run: Callable[[int], list[float]], tf_stats: bool) -> dict[str, float | None]:
    """Peak memory growth of one call: the process's peak RSS and, where TF counts them, the
    peak bytes in use by TF's allocator; peak_mb is the larger of the two."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss0 = _status_kb("VmRSS")
    _reset_peak_rss()
    before = None
    if tf_stats:
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = _tf_allocator_bytes()
    run(1)
    rss_mb = (_status_kb("VmHWM") - rss0) / 1024
    after = _tf_allocator_bytes() if before else None
    # A peak of 0 means the allocator keeps no statistics.
    tf_mb = (after[1] - before[0]) / 2**20 if before and after and after[1] > 0 else None
    return {"peak_mb": max(rss_mb, tf_mb or 0.0), "rss_growth_mb": rss_mb, "tf_alloc_mb": tf_mb}


# ---- the machine's matmul rate ---------------------------------------------------------------
def matmul_rate(n: int, budget_s: float) -> dict:
    """Best float32 GFLOP/s of an n x n product through numpy and through tf.matmul."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    tf_mm = tf.function(lambda: tf.matmul(ta, tb))
    flops = 2.0 * n**3
    result: dict[str, Any] = {"n": n}
    for name, call in (("numpy", lambda: a @ b), ("tf", tf_mm)):
        call()
        rates, start = [], time.perf_counter()
        while len(rates) < 3 or (time.perf_counter() - start < budget_s and len(rates) < 50):
            t0 = time.perf_counter()
            call()
            tf_sync()
            rates.append(flops / (time.perf_counter() - t0) / 1e9)
        result[f"{name}_gflops"] = rates
        result[f"{name}_best"] = max(rates)
    return result


# ---- one shape -------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return float(np.median(values))


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    # float32 is enough: differences of values this close are exact (Sterbenz).
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_outputs(benches: list[Bench]) -> dict[str, dict[str, Any]]:
    """Max abs differences of each variant's forward outputs: h against keras.layers.GRU, the
    gates against the custom cell (Keras's math step by step), else against GateGRU."""
    by_name = {b.variant: b.outputs for b in benches if b.mode == "forward" and b.outputs}
    ref_h_name = next((n for n in ("keras_gru", REFERENCE) if n in by_name), None)
    ref_g_name = next((n for n in ("keras_cell", REFERENCE, "keras_recompute") if n in by_name),
                      None)
    if ref_h_name is None:
        return {}
    cache = {ref_h_name: by_name[ref_h_name]()}
    ref_h = cache[ref_h_name]["h"]
    ref_g = None
    if ref_g_name is not None:
        cache[ref_g_name] = cache.get(ref_g_name) or by_name[ref_g_name]()
        ref_g = {k: v for k, v in cache[ref_g_name].items() if k != "h"}
    diffs: dict[str, dict[str, Any]] = {}
    for name, outputs in by_name.items():
        out = cache.pop(name, None) or outputs()
        entry: dict[str, Any] = {"h": _max_diff(out["h"], ref_h), "h_reference": ref_h_name}
        if ref_g and "update" in out:
            entry["gates"] = max(_max_diff(out[k], ref_g[k]) for k in ref_g)
            entry["gates_reference"] = ref_g_name
        diffs[name] = entry
        del out
    return diffs


MAX_ROUNDS = 25


def time_benches(benches: list[Bench], args: argparse.Namespace) -> None:
    """Warm-up, then repeats interleaved over rounds, each bench getting about args.budget s
    (at least min_repeats and one per round, at most max_repeats). Every round times every
    bench within a few seconds, so ratios taken round by round compare like with like on a
    machine whose speed drifts."""
    estimates = []
    for bench in benches:
        bench.run(1)  # traces the tf.function, JIT-compiles, starts thread pools, touches memory
        estimate = bench.run(1)[0]
        if estimate < 200:  # cheap: a second look, as the first calls are often slow
            estimate = min(estimate, *bench.run(2))
        estimates.append(estimate)
    wanted = [math.ceil(args.budget * 1e3 / max(t, 1e-3)) for t in estimates]
    counts = [int(min(args.max_repeats, max(args.min_repeats, n))) for n in wanted]
    # At least args.rounds; more while every bench can afford a call per round, since the
    # shorter a round, the closer in time the calls it pairs.
    rounds = max(1, args.rounds) if args.quick else max(args.rounds, min(min(counts), MAX_ROUNDS))
    counts = [max(c, rounds) for c in counts]
    for bench in benches:
        bench.rounds = [[] for _ in range(rounds)]
    for r in range(rounds):
        order = list(range(len(benches)))
        order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
        for i in order:
            k = (r + 1) * counts[i] // rounds - r * counts[i] // rounds
            if k:
                benches[i].rounds[r].extend(benches[i].run(k))
                time.sleep(0.05)  # let spinning worker threads of the last variant go idle


# ---- the long sequence -----------------------------------------------------------------------
def long_run(steps: int, chunk: int, reset_after: bool = True) -> dict:
    """GateGRU with gates over B=1, T=steps, I=32, H=128, in chunks of `chunk` steps with the
    state carried between calls (chunk 0: one call). After each chunk, one call of S1's
    length (2000 steps) with the same layer, so that the per-step comparison with S1 is made
    side by side: a B=1 step is mostly two threads meeting at a barrier, and on this shared
    machine that alone took 1.8 or 2.7 µs from one process to the next."""
    width, units = 32, 128
    chunk = steps if chunk <= 0 else min(chunk, steps)
    layer = gategru.GateGRU(units, return_sequences=True, return_state=True, return_gates=True,
                            reset_after=reset_after)
    layer.build((None, None, width))
    fn = tf.function(
        lambda x, h: layer(x, initial_state=h, training=False), jit_compile=False,
        input_signature=[tf.TensorSpec([1, None, width], tf.float32),
                         tf.TensorSpec([1, units], tf.float32)])
    x = tf.constant(np.random.default_rng(2).standard_normal((1, steps, width), np.float32))
    h0 = tf.zeros([1, units])
    fn(x[:, : min(chunk, 1000)], h0)  # trace (the signature leaves the length open)
    tf_sync()
    gc.collect()
    rss0 = _status_kb("VmRSS")
    peak_ok = _reset_peak_rss()
    tf_before = _tf_allocator_bytes()
    if tf_before:
        tf.config.experimental.reset_memory_stats("CPU:0")
        tf_before = _tf_allocator_bytes()
    short = x[:, : min(SHAPES["S1"][1], steps)]
    fn(short, h0)  # the trace for this length
    h, chunk_ms, short_ms, gate_sum = h0, [], [], 0.0
    start = time.perf_counter()
    for s in range(0, steps, chunk):
        t0 = time.perf_counter()
        seq, h, gates = fn(x[:, s : s + chunk], h)
        tf_sync()
        chunk_ms.append((time.perf_counter() - t0) * 1e3)
        gate_sum += float(gates["update"][0, -1, 0])  # touch the gates: they were written
        del seq, gates
        t0 = time.perf_counter()
        fn(short, h0)
        tf_sync()
        short_ms.append((time.perf_counter() - t0) * 1e3)
    wall_s = time.perf_counter() - start
    total_s = sum(chunk_ms) / 1e3  # the calls alone
    per_step_us = total_s / steps * 1e6
    short_per_step_us = float(np.median(short_ms)) / int(short.shape[1]) * 1e3
    tf_after = _tf_allocator_bytes() if tf_before else None
    if tf_after and tf_after[1] == 0:
        tf_after = None  # no statistics kept
    return {
        "dims": [1, steps, width, units], "chunk": chunk, "total_s": total_s, "wall_s": wall_s,
        "per_step_us": per_step_us, "chunk_ms": chunk_ms,
        "short_steps": int(short.shape[1]), "short_ms": short_ms,
        "short_per_step_us": short_per_step_us, "per_step_vs_s1": per_step_us / short_per_step_us,
        "peak_rss_delta_mb": (_status_kb("VmHWM") - rss0) / 1024 if peak_ok else None,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "peak_tf_alloc_delta_mb": (tf_after[1] - tf_before[0]) / 2**20
        if tf_before and tf_after else None,
        "finite": bool(np.isfinite(gate_sum) and np.all(np.isfinite(np.asarray(h)))),
    }


# ---- machine and versions --------------------------------------------------------------------
def machine_info() -> dict:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "platform": platform.platform()}
    try:
        raw = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("Flags", "").split())
        info["cpu"] = {k: fields.get(k) for k in ("Model name", "Vendor ID", "CPU(s)",
                       "Thread(s) per core", "L1d cache", "L2 cache", "L3 cache",
                       "Hypervisor vendor")}
        info["isa"] = sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f",
                             "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile"})
        info["lscpu"] = fields
    except (OSError, subprocess.CalledProcessError) as err:
        info["lscpu_error"] = str(err)
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def versions(torch: Any, onednn_header: dict | None) -> dict:
    out: dict[str, Any] = {
        "python": platform.python_version(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "numpy": np.__version__,
        "gategru": getattr(gategru, "__version__", None), "gategru_path": gategru.__file__,
        "torch": getattr(torch, "__version__", None),
        "onednn_package": onednn_package_version(),
        "onednn": onednn_header.get("version") if onednn_header else None,
        "gategru_cpu_isa": _gategru_kernels.cpu_isa(),
        # a pool that keeps freed blocks (oneDNN opts on, or TF_CPU_ALLOCATOR_USE_BFC)
        "tf_cpu_allocator_caching": _tf_allocator_bytes() is not None,
    }
    try:
        from tensorflow.python.util import _pywrap_util_port

        out["tf_onednn_opts"] = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        out["tf_onednn_opts"] = None
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except (TypeError, KeyError):
        pass
    gxx = shutil.which("g++")
    if gxx:
        out["gxx"] = subprocess.run([gxx, "--version"], capture_output=True,
                                    text=True).stdout.splitlines()[0]
    return out


# ---- command line ----------------------------------------------------------------------------
def parse_shape(spec: str) -> tuple[str, tuple[int, int, int, int]]:
    if spec in SHAPES:
        return spec, SHAPES[spec]
    parts = spec.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"shape {spec!r}: use S1, S2, S3 or BxTxIxH")
    dims = tuple(int(p) for p in parts)
    return spec, dims  # type: ignore[return-value]


def parse_tag(tag: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", tag):
        raise argparse.ArgumentTypeError(f"tag {tag!r}: letters, digits, - and _ only")
    return tag


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=None,
                   help="S1 S2 S3 or BxTxIxH (default: S1 S2 S3; --quick: 2x30x8x16)")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: one small shape, few repeats (output files *-quick.*)")
    p.add_argument("--long", action="store_true", help="also the long-sequence run")
    p.add_argument("--long-steps", type=int, default=None, help="default 1e6 (--quick: 20000)")
    p.add_argument("--long-chunk", type=int, default=50_000,
                   help="steps per call, state carried over (default 50000; 0: one call)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of (default: all): " + ", ".join(VARIANTS))
    p.add_argument("--modes", default="forward,train",
                   help="forward, train or forward,train (default)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of repeats per shape, variant and mode (default 3; --quick 0.05)")
    p.add_argument("--min-repeats", type=int, default=None, help="default 5 (--quick: 3)")
    p.add_argument("--max-repeats", type=int, default=200, help="default 200")
    p.add_argument("--rounds", type=int, default=None,
                   help="repeats are interleaved over at least this many rounds, more (up to "
                   f"{MAX_ROUNDS}) while every variant affords a call per round (default 7; "
                   "--quick 1)")
    p.add_argument("--threads", type=int, default=THREADS,
                   help="threads for TF (intra and inter op), torch, OpenMP and OpenBLAS "
                   f"(default: all cores, {THREADS} here)")
    p.add_argument("--matmul-n", type=int, default=None, help="default 2048 (--quick: 256)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                   help="where cpu-<date>.json/.md/.png go (default: bench/results)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    p.add_argument("--tag", type=parse_tag, default="",
                   help="added to the output files' names, cpu-<date>-<tag>.*, so that a run "
                   "of other shapes keeps the day's main run")
    p.add_argument("--reset-after", choices=("true", "false"), default="true",
                   help="the GRU variant (default true, Keras's default); false skips torch and "
                   "oneDNN, which compute the true form only (files cpu-<date>-reset-before.*)")
    args = p.parse_args(argv)
    quick = args.quick
    args.reset_after = args.reset_after == "true"
    args.shapes = dict(args.shapes or (QUICK_SHAPES.items() if quick else SHAPES.items()))
    args.long_steps = args.long_steps or (20_000 if quick else 1_000_000)
    args.budget = args.budget if args.budget is not None else (0.05 if quick else 3.0)
    args.min_repeats = args.min_repeats or (3 if quick else 5)
    args.rounds = args.rounds or (1 if quick else 7)
    args.matmul_n = args.matmul_n or (256 if quick else 2048)
    args.variants = ",".join(v.strip() for v in args.variants.split(","))
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    args.variants = [v for v in VARIANTS if v in args.variants.split(",")]
    args.modes = [m for m in ("forward", "train") if m in args.modes.split(",")]
    return args


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start, started = time.perf_counter(), dt.datetime.now().isoformat(timespec="seconds")
    wanted, modes = set(args.variants), set(args.modes)
    loadavg_start = os.getloadavg()
    if loadavg_start[0] > (os.cpu_count() or 1):
        # OpenMP peers (torch, oneDNN) spin at barriers: a busy machine hurts them most.
        _log(f"warning: load average {loadavg_start[0]:.1f} on {os.cpu_count()} cores; "
             "timings will be noisy, torch and oneDNN the most")
    if not args.reset_after:  # both compute the reset_after=True GRU only
        wanted -= {"torch_gru", "onednn_gru", "onednn_gru_avx2"}
    torch, torch_reason = load_torch(wanted, args.threads)
    onednn_wanted = [v for v in ("onednn_gru", "onednn_gru_avx2") if v in wanted]
    binary, onednn_reason = build_onednn() if onednn_wanted else (None, "not selected")
    reasons: dict[str, str | None] = {v: None if v in wanted else "not selected"
                                      for v in VARIANTS}
    reasons["torch_gru"] = torch_reason
    for v in onednn_wanted:
        reasons[v] = None if binary else onednn_reason
    if not args.reset_after:
        for v in ("torch_gru", "onednn_gru", "onednn_gru_avx2"):
            if v in args.variants:
                reasons[v] = "computes the reset_after=True GRU only"

    if _tf_allocator_bytes() is None:
        _log("note: TF's CPU allocator hands large blocks back to the OS (oneDNN opts off), so "
             "every large tensor starts on fresh pages; TF_CPU_ALLOCATOR_USE_BFC=true keeps "
             "them (README, 'Performance on the CPU')")
    _log(f"matmul rate ({args.matmul_n}²)")
    matmul_first = matmul_rate(args.matmul_n, 1.0 if not args.quick else 0.1)
    results: list[dict] = []
    checks: dict[str, dict] = {}
    onednn_header: dict | None = None
    kept: list[tuple[str, list[Bench]]] = []  # for the memory pass, after every timing
    with tempfile.TemporaryDirectory(prefix="gategru-bench-") as tmp:
        for shape, dims in args.shapes.items():
            _log(f"{shape} {'x'.join(map(str, dims))}: building")
            batch, steps, width, _ = dims
            x_np = np.random.default_rng(args.seed).standard_normal((batch, steps, width),
                                                                    np.float32)
            benches, weights = keras_benches(dims, x_np, wanted, modes, args.reset_after)
            if torch is not None:
                benches += torch_benches(torch, dims, x_np, weights, modes)
            servers: list[OneDnnServer] = []
            if binary is not None and "forward" in modes:
                more, servers, failed = onednn_benches(binary, dims, x_np, weights,
                                                       onednn_wanted, Path(tmp), args.threads)
                for v, why in failed.items():
                    reasons[v] = f"onednn_gru failed at {shape}: {why}"
                if servers:
                    onednn_header = onednn_header or servers[0].header
                    native = servers[0].header
                    if native.get("isa", 0) <= 0x7 and "onednn_gru_avx2" in onednn_wanted:
                        reasons["onednn_gru_avx2"] = "the CPU has no ISA above AVX2"
                        more = [b for b in more if b.variant != "onednn_gru_avx2"]
                benches += more
            try:
                _log(f"{shape}: timing {len(benches)} benches")
                load0 = os.getloadavg()[0]
                time_benches(benches, args)
                load1 = os.getloadavg()[0]
                _log(f"{shape}: checking outputs")
                checks[shape] = check_outputs(benches)
            finally:
                for server in servers:
                    server.close()
            for b in benches:
                times = b.times
                results.append({"shape": shape, "dims": list(dims), "variant": b.variant,
                                "mode": b.mode, "status": "ok", "times_ms": times,
                                "repeats": len(times), "median_ms": _median(times),
                                "min_ms": min(times), "memory": b.memory,
                                "round_medians_ms": [_median(t) for t in b.rounds if t],
                                "loadavg": [load0, load1]})
            kept.append((shape, [b for b in benches if not b.variant.startswith("onednn")]))

        long = None
        if args.long:
            _log(f"long sequence: {args.long_steps} steps, chunks of {args.long_chunk}")
            long = long_run(args.long_steps, args.long_chunk, args.reset_after)
        _log("matmul rate again")
        matmul_last = matmul_rate(args.matmul_n, 1.0 if not args.quick else 0.1)

        memory_ok = False
        if not args.no_memory and _reset_peak_rss() and _return_freed_memory_to_os():
            memory_ok = True
            _log("peak memory pass")
            tf_stats = _tf_allocator_bytes() is not None  # None: TF keeps no statistics
            for shape, benches in kept:
                gc.collect()
                for b in benches:
                    b.memory = measure_memory(b.run, tf_stats and b.variant != "torch_gru")
                    for r in results:
                        if (r["shape"], r["variant"], r["mode"]) == (shape, b.variant, b.mode):
                            r["memory"] = b.memory

    _log("writing the report")
    # Ratios, fractions of the matmul rate, targets.
    best_rate = max(matmul_first["numpy_best"], matmul_first["tf_best"],
                    matmul_last["numpy_best"], matmul_last["tf_best"])
    medians = {(r["shape"], r["variant"], r["mode"]): r["median_ms"] for r in results}
    by_round = {(r["shape"], r["variant"], r["mode"]): r["round_medians_ms"] for r in results}
    fractions = {}
    for r in results:
        ref = medians.get((r["shape"], REFERENCE, r["mode"]))
        r["vs_gates"] = r["median_ms"] / ref if ref else None
        r["gflops"] = gru_flops(tuple(r["dims"]), r["mode"]) / r["median_ms"] / 1e6
        r["matmul_fraction"] = r["gflops"] / best_rate
        fractions[(r["shape"], r["variant"], r["mode"])] = r["matmul_fraction"]
    if long is not None:
        s1 = medians.get(("S1", REFERENCE, "forward")) if args.shapes.get("S1") == SHAPES[
            "S1"] else None
        # S1's own row, timed minutes earlier, for reference; the target compares with
        # S1-length calls timed between the chunks (long_run)
        long["s1_per_step_us"] = s1 / SHAPES["S1"][1] * 1e3 if s1 else None
    matmul = {"n": args.matmul_n, "start": matmul_first, "end": matmul_last,
              "numpy_best": max(matmul_first["numpy_best"], matmul_last["numpy_best"]),
              "tf_best": max(matmul_first["tf_best"], matmul_last["tf_best"]),
              "best_gflops": best_rate}
    threads = {"threads": args.threads,
               "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
               "torch": torch.get_num_threads() if torch else None,
               "torch_interop": torch.get_num_interop_threads() if torch else None,
               "onednn_omp": onednn_header.get("threads") if onednn_header else None,
               **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    today = dt.date.today().isoformat()
    report = {
        "date": today, "started": started,
        "argv": sys.argv[1:], "quick": args.quick, "reset_after": args.reset_after,
        "machine": machine_info(), "versions": versions(torch, onednn_header),
        "onednn": onednn_header, "threads": threads,
        "env": {k: os.environ.get(k) for k in ("TF_ENABLE_ONEDNN_OPTS", "OPENBLAS_CORETYPE",
                                               "ONEDNN_MAX_CPU_ISA", "GATEGRU_CPU_ISA",
                                               "TF_CPU_ALLOCATOR_USE_BFC")},
        "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(),
        "settings": {"budget_s": args.budget, "min_repeats": args.min_repeats,
                     "max_repeats": args.max_repeats, "min_rounds": args.rounds,
                     "memory": MEMORY_NOTE if memory_ok else "not measured"},
        "shapes": {k: list(v) for k, v in args.shapes.items()},
        "variants": {v: {"label": VARIANTS[v][0], "modes": list(VARIANTS[v][1]),
                         "available": reasons[v] is None, "reason": reasons[v]}
                     for v in VARIANTS},
        "flops_formula": FLOPS_FORMULA, "matmul": matmul, "results": results,
        "ratios_vs_gates": {  # median time / GateGRU-gates-on median time, same shape and mode
            s: {m: {r["variant"]: r["vs_gates"] for r in results
                    if r["shape"] == s and r["mode"] == m} for m in args.modes}
            for s in args.shapes},
        "output_checks": checks, "long": long,
        "targets": targets(by_round, fractions, args.shapes, long),
        "wall_s": time.perf_counter() - t_start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"cpu-{today}{'' if args.reset_after else '-reset-before'}"
                       f"{'-' + args.tag if args.tag else ''}{'-quick' if args.quick else ''}")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    plot(report, stem.with_suffix(".png"))
    print(text)
    _log(f"wrote {stem}.json/.md/.png in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
