"""Smoke test of the CPU benchmark: `bench/cpu_bench.py --quick` runs end to end and writes
a JSON report with every available variant timed (PyTorch and oneDNN are optional)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cpu_bench.py"


def test_quick_benchmark_writes_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    # cwd=tmp_path: the source tree's gategru (no compiled op) must not shadow the installed one.
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--rounds", "2", "--out", str(out), "--long",
         "--long-steps", "4000", "--long-chunk", "1000"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [report_path] = out.glob("cpu-*-quick.json")
    assert report_path.with_suffix(".md").stat().st_size > 0
    assert report_path.with_suffix(".png").stat().st_size > 0
    report = json.loads(report_path.read_text())

    variants = report["variants"]
    for name in ("gategru_gates", "gategru_nogates", "keras_gru", "keras_cell",
                 "keras_recompute"):
        assert variants[name]["available"], (name, variants[name]["reason"])
    for name, info in variants.items():
        if not info["available"]:
            assert info["reason"], f"{name} skipped without a reason"

    results = {(r["shape"], r["variant"], r["mode"]): r for r in report["results"]}
    for shape in report["shapes"]:
        for name, info in variants.items():
            if not info["available"]:
                continue
            for mode in info["modes"]:
                r = results[(shape, name, mode)]
                assert r["repeats"] == len(r["times_ms"]) >= 2
                assert len(r["round_medians_ms"]) == report["settings"]["min_rounds"] == 2
                for value in (*r["times_ms"], r["median_ms"], r["vs_gates"],
                              r["matmul_fraction"]):
                    assert math.isfinite(value) and value > 0, (shape, name, mode, value)
                checks = report["output_checks"][shape]
                if mode == "forward":
                    assert checks[name]["h"] < 1e-4, (name, checks[name])
                    assert checks[name].get("gates", 0.0) < 1e-4, (name, checks[name])

    assert report["matmul"]["best_gflops"] > 0
    assert report["threads"]["tf_intra_op"] == report["threads"]["threads"]
    # The long run: its chunks, each followed by an S1-length call it is compared with.
    long = report["long"]
    assert long["finite"] and len(long["chunk_ms"]) == len(long["short_ms"]) == 4
    assert long["short_steps"] == 2000
    assert long["per_step_vs_s1"] == pytest.approx(long["per_step_us"]
                                                   / long["short_per_step_us"])
    assert math.isfinite(long["per_step_vs_s1"]) and long["per_step_vs_s1"] > 0
    assert [t for t in report["targets"] if t["shape"] == "long"][0]["value"] == (
        long["per_step_vs_s1"])
    assert report["machine"]["nproc"] >= 1 and report["versions"]["tensorflow"]


def test_quick_benchmark_of_the_reset_before_gru(tmp_path: Path) -> None:
    """--reset-after false: the GateGRU and Keras variants with reset_after=False agree with
    each other (h and the gates), and the reset_after=True-only peers say why they are out."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--rounds", "2", "--reset-after", "false",
         "--no-memory", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [report_path] = out.glob("cpu-*-reset-before-quick.json")
    report = json.loads(report_path.read_text())
    assert report["reset_after"] is False
    assert "reset_after=False" in report_path.with_suffix(".md").read_text()
    for name in ("torch_gru", "onednn_gru", "onednn_gru_avx2"):
        assert not report["variants"][name]["available"]
        assert "reset_after=True" in report["variants"][name]["reason"]
    [shape] = report["shapes"]
    checks = report["output_checks"][shape]
    for name in ("gategru_gates", "gategru_nogates", "keras_cell", "keras_recompute"):
        assert report["variants"][name]["available"], report["variants"][name]["reason"]
        assert checks[name]["h"] < 1e-4, (name, checks[name])
    # GateGRU's gates against the custom cell's, and the recomputed ones against the cell's.
    assert checks["gategru_gates"]["gates_reference"] == "keras_cell"
    assert checks["gategru_gates"]["gates"] < 1e-4, checks["gategru_gates"]
    assert checks["keras_recompute"]["gates"] < 1e-4, checks["keras_recompute"]


def _bench_module(name: str):
    """A side-effect-free module of bench/ (cpu_bench.py itself sets threads on import)."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH.parent))


def test_paired_ratio_takes_ratios_round_by_round() -> None:
    paired_ratio = _bench_module("paired_ratios").paired_ratio
    # The machine ran at half speed in round 2: both sides slowed, the ratio did not.
    paired = paired_ratio([3.0, 6.0, 3.3], [1.0, 2.0, 1.0])
    assert paired == {"median": 3.0, "min": 3.0, "max": pytest.approx(3.3), "rounds": 3}
    assert paired_ratio([], [1.0]) is None


def test_targets_are_judged_on_paired_ratios() -> None:
    spec = _bench_module("cpu_bench_spec")
    by_round = {  # per-round medians, ms: oneDNN is slower in 2 of 3 rounds at S2
        ("S2", "onednn_gru", "forward"): [10.0, 10.0, 10.0],
        ("S2", "gategru_gates", "forward"): [8.0, 12.0, 9.0],
        ("S2", "gategru_nogates", "forward"): [7.0, 11.0, 8.5],
        ("S2", "keras_gru", "train"): [30.0, 36.0, 27.0],
        ("S2", "gategru_gates", "train"): [10.0, 10.0, 10.0],
    }
    rows = spec.targets(by_round, {("S3", "gategru_gates", "forward"): 0.65},
                        {"S2": spec.SHAPES["S2"], "S3": spec.SHAPES["S3"]}, None)
    by_target = {(r["shape"], r["target"]): r for r in rows}
    onednn = by_target[("S2", "gates on faster than oneDNN lbr_gru")]
    assert onednn["value"] == pytest.approx(10 / 9) and onednn["met"] is True
    assert onednn["range"] == [pytest.approx(10 / 12), pytest.approx(10 / 8)]
    cost = by_target[("S2", "gates on costs <= 10% over gates off")]
    assert cost["value"] == pytest.approx(12 / 11) and cost["met"] is True
    train = by_target[("S2", "training step >= 3x faster than Keras (gates in the loss)")]
    assert train["value"] == pytest.approx(3.0) and train["met"] is True
    assert by_target[("S2", "gates on faster than torch.nn.GRU")]["met"] is None  # not run
    assert by_target[("S3", ">= 70% of the best matmul rate (gates on)")]["met"] is False
