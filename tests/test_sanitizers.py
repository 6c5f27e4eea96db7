"""The CPU kernels under AddressSanitizer with UndefinedBehaviorSanitizer, and under
ThreadSanitizer: the numpy module is rebuilt with them and runs the oracle tests of
test_kernels_numpy.py (every instruction set this CPU has, masks, odd sizes, threads), in
a process that never imports TensorFlow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_tool(name: str) -> str:
    """cmake or ninja: the venv's (./run installs them there when missing), else PATH's."""
    venv_tool = Path(sys.executable).parent / name
    found = str(venv_tool) if venv_tool.exists() else shutil.which(name)
    assert found, f"{name} is needed to build the sanitized module"
    return found


def build_sanitized_module(sanitizers: str = "address,undefined",
                           folder: str = "sanitize") -> Path:
    build = ROOT / "build" / folder
    cmake = build_tool("cmake")
    configure = [
        cmake, "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
        f"-DCMAKE_MAKE_PROGRAM={build_tool('ninja')}",
        "-DGATEGRU_BUILD_TF=OFF", "-DGATEGRU_CUDA=OFF", f"-DGATEGRU_SANITIZE={sanitizers}",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo", f"-DPython_EXECUTABLE={sys.executable}",
    ]
    for cmd in (configure, [cmake, "--build", str(build), "--target", "_kernels"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next(build.glob("_kernels*.so"))


def run_oracle_tests(tmp_path: Path, module: Path, runtime: str, options: dict) -> str:
    """test_kernels_numpy.py against `module`, with the sanitizer runtime preloaded."""
    package = tmp_path / "gategru"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(ROOT / "gategru" / "reference.py", package)
    shutil.copy(module, package)
    # libstdc++ too: the runtime must find the real __cxa_throw when it starts, and python
    # does not link libstdc++ itself.
    preload = [
        subprocess.run(["g++", f"-print-file-name={lib}"], capture_output=True,
                       text=True).stdout.strip()
        for lib in (runtime, "libstdc++.so")
    ]
    # One BLAS thread for the oracle's numpy matmuls: OpenBLAS's own threads are not
    # instrumented, and TSan reports their handoffs as races.
    env = dict(os.environ, PYTHONPATH=str(tmp_path), LD_PRELOAD=" ".join(preload),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **options)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_kernels_numpy.py")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )
    report = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout
    return report


def symbols(module: Path) -> str:
    return subprocess.run(["nm", "-D", str(module)], capture_output=True, text=True).stdout


def test_kernels_are_clean_under_asan_and_ubsan(tmp_path):
    module = build_sanitized_module()
    assert "__asan_" in symbols(module) and "__ubsan_" in symbols(module)  # instrumented
    report = run_oracle_tests(tmp_path, module, "libasan.so", {
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",  # CPython itself leaks at exit
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    })
    assert "ERROR: AddressSanitizer" not in report and "runtime error:" not in report


def test_kernels_are_clean_under_tsan(tmp_path):
    """The workers' shares, stealing and per-step barrier: no data race."""
    module = build_sanitized_module("thread", "sanitize-thread")
    assert "__tsan_" in symbols(module)
    report = run_oracle_tests(tmp_path, module, "libtsan.so", {
        "TSAN_OPTIONS": "halt_on_error=1:exitcode=66",
    })
    assert "WARNING: ThreadSanitizer" not in report
