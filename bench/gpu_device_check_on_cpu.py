#!/usr/bin/env python3
"""Runs bench/gpu_device_check.py's correctness checks and timing cases on the CPU, with
the numpy kernels (float64 inside) standing in for the CUDA entry points.

It tests the script, not the CUDA kernels: argument passing, dtype handling (bfloat16 as
int16 views), reference conversions and the checks themselves, so that an error there
does not cost the few minutes of a lent GPU. Needs PyTorch (`./run bench` installs it):
    .venv/bin/python bench/gpu_device_check_on_cpu.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_timing as timing  # noqa: E402
import gpu_device_check as check  # noqa: E402

from gategru import _kernels  # noqa: E402


def _real(t, dtype):
    if t is None:
        return None
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def _f64(t, dtype):
    return None if t is None else _real(t, dtype).double().numpy()


def _write(dst, value, dtype):
    out = _real(dst, dtype)
    out.copy_(torch.from_numpy(value).to(out.dtype))


class CpuKernels:
    """forward_cuda/backward_cuda's signatures over CPU tensors, computed in float64."""

    def cuda_available(self):
        return False, "CPU stand-in"

    def cuda_launch_plan(self, *args, **kwargs):
        return {"persistent": True}

    def forward_cuda(self, xw, h0, u, b, h_seq, h_last, mask=None, update=None, reset=None,
                     candidate=None, hu_candidate=None, reset_after=True, stream=0,
                     path="auto", kernel=None, input_bias=None, dtype=None):
        out = _kernels.forward(
            _f64(xw, dtype), _f64(h0, dtype), _f64(u, dtype), _f64(b, dtype),
            None if mask is None else mask.numpy(), reset_after=reset_after,
            kernel=_f64(kernel, dtype), input_bias=_f64(input_bias, dtype),
        )
        targets = {"h_seq": h_seq, "h_last": h_last, "update": update, "reset": reset,
                   "candidate": candidate, "hu_candidate": hu_candidate}
        for name, dst in targets.items():
            if dst is not None:
                _write(dst, out[name], dtype)

    def backward_cuda(self, h0, u, h_seq, update, reset, candidate, d_h_seq, d_xw, d_h0,
                      mask=None, hu_candidate=None, d_h_last=None, d_update=None,
                      d_reset=None, d_candidate=None, reset_after=True, stream=0, path="auto",
                      dtype=None):
        f = [_f64(t, dtype) for t in (h0, u)]
        dx, dh = _kernels.backward(
            *f, None if mask is None else mask.numpy(),
            *(_f64(t, dtype) for t in (h_seq, update, reset, candidate, hu_candidate, d_h_seq,
                                       d_h_last, d_update, d_reset, d_candidate)),
            reset_after=reset_after,
        )
        _write(d_xw, dx, dtype)
        _write(d_h0, dh, dtype)


class CpuOurs(check.Ours):
    def stream(self) -> int:
        return 0


def main() -> int:
    kernels = CpuKernels()
    failed, counts = [], {}

    def record(**r):
        if r.get("kind") == "check":
            counts[r.get("test")] = counts.get(r.get("test"), 0) + 1
            if not r.get("ok"):
                failed.append(r)

    check.run_correctness(kernels, CpuOurs(kernels, torch), record, device="cpu")
    memcheck = []
    check.run_memcheck(CpuOurs(kernels, torch), lambda **r: memcheck.append(r), device="cpu")

    def wall_ms(torch_, fn, deadline):
        start = time.perf_counter()
        fn()
        return {"ms": (time.perf_counter() - start) * 1e3, "repeats": 1, "min_ms": 0.0}

    timing.cuda_time_ms = wall_ms
    timings = []
    for label, dtype in (("fp32", torch.float32), ("fp16", torch.float16),
                         ("bf16", torch.bfloat16)):
        base = dict(kind="timing", dtype=label, B=2, T=7, I=16, H=16)
        timing.time_one(torch, CpuOurs(kernels, torch), torch.device("cpu"), dtype, 2, 7, 16,
                       base, lambda **r: timings.append(r), time.time() + 120)
    # the launch-shape sweep's loop, with a fake plan that follows the override
    override = {"slice": 0, "y": 0}

    def set_override(slice_width, blocks_y):
        override.update(slice=slice_width, y=blocks_y)

    def plan(batch, units, dtype):
        width = override["slice"] or 8
        return {"persistent": True, "blocks_x": -(-units // width),
                "blocks_y": override["y"] or 2, "rows_per_block": batch}

    kernels.cuda_set_launch_override, kernels.cuda_launch_plan = set_override, plan
    sweep = []
    timing.sweep_shape(torch, kernels, CpuOurs(kernels, torch), 4, 16, 3,
                       lambda **r: sweep.append(r), time.time() + 60, device="cpu", t=6)
    report = {"date": "-", "device": "cpu", "torch": "-", "cudnn": "-", "correct": True,
              "timings": [], "checks": [], "notes": [], "sweep": sweep}
    sweep_ok = len(sweep) >= 3 and "| 16 | 3 |" in check.markdown(report)
    print(f"sweep rows: {len(sweep)}; table: {sweep_ok}")
    errors = [r for r in timings if "error" in r]
    print(f"checks per test: {counts}; failed: {len(failed)}")
    print(f"timing cases: {len(timings)}; errors: {len(errors)}")
    memcheck_cases = sum(r["kind"] == "memcheck_case" for r in memcheck)
    memcheck_done = any(r["kind"] == "done" for r in memcheck)
    print(f"memcheck stage cases: {memcheck_cases}; finished: {memcheck_done}")
    for r in (failed + errors)[:10]:
        print(r)
    return 1 if failed or errors or not memcheck_done or not sweep_ok else 0


if __name__ == "__main__":
    sys.exit(main())
