"""The CUDA kernels' source, run on CPU threads through the stand-in runtime in
tools/cuda_emulation/, against the CPU kernels: index math, masks, phases, barrier
placement, 16-bit storage, the projection kernel and the per-step fallback after a refused
cooperative launch. No GPU or nvcc needed; it says nothing about the GPU's memory model or
speed (tools/cuda_emulation/run.sh explains what it covers).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "tools" / "cuda_emulation" / "run.sh"


def test_cuda_kernel_source_matches_the_cpu_kernels():
    if shutil.which("g++") is None:
        pytest.fail("g++ is needed to build the emulation (and gategru itself)")
    result = subprocess.run([str(RUN), "-", "tiny"], capture_output=True, text=True,
                            timeout=600)
    report = result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, report
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 failures", report
    cases = [line for line in lines if line.startswith(("ok", "FAIL"))]
    assert len(cases) >= 10 and all(line.startswith("ok") for line in cases), report
    # both launch paths ran, and the refused cooperative launch fell back to per-step
    assert any("(coop)" in line for line in cases), report
    assert any("path=0(step)" in line for line in cases), report
    assert any("forced persistent, launch refused: rc=82" in line for line in cases), report
