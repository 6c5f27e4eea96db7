"""The command line and the demo, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "gategru", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_demo_trains_and_draws(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path / "out"), "--epochs", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    png = tmp_path / "out" / "gates.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(tmp_path / "out" / "gates.npz")
    for name in ("update", "reset", "candidate"):
        gate = arrays[name]
        assert gate.ndim == 3 and np.isfinite(gate).all()
        assert gate.std() > 0  # real activations, not a constant fill
    assert "update" in result.stdout and "reset" in result.stdout


def test_cli_errors_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("demo", "--out", str(blocker / "sub"), "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # TensorFlow may print its own start-up notices first; ours is one line, the last
    ours = [line for line in result.stderr.splitlines() if line.startswith("gategru")]
    assert len(ours) == 1 and result.stderr.strip().splitlines()[-1] == ours[0]
    assert "Not a directory" in ours[0]
    bad = run_cli("demo", "--epochs", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_help_lists_the_demo(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and "demo" in result.stdout
