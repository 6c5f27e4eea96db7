"""What a user sees when the op library is missing or built for another TensorFlow."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

INSTALLED = Path(importlib.util.find_spec("gategru").origin).parent


def copy_package(tmp_path: Path, keep_library: bool, tf_version: str | None = None) -> Path:
    root = tmp_path / "site"
    shutil.copytree(INSTALLED, root / "gategru",
                    ignore=shutil.ignore_patterns("__pycache__", *([] if keep_library else
                                                                   ["_gategru_ops*"])))
    if tf_version is not None:
        (root / "gategru" / "_build_info.py").write_text(f'TF_VERSION = "{tf_version}"\n'
                                                        "WITH_CUDA = False\n")
    return root


def run_with(root: Path, script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


CHECK = """
    import numpy as np
    import gategru
    from gategru.reference import gru_sequence_reference
    from gategru import _kernels
    rng = np.random.default_rng()
    xw, h0 = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 2))
    u, b = rng.normal(size=(2, 6)), rng.normal(size=6)
    # the numpy module keeps working without the op library
    np.testing.assert_allclose(_kernels.forward(xw, h0, u, b)["h_seq"],
                               gru_sequence_reference(xw, h0, u, b).h_seq, atol=1e-12)
    try:
        gategru.GateGRU(4)
    except gategru.OpLibraryError as err:
        print("ERROR:", err)
"""


def test_missing_op_library_says_how_to_fix(tmp_path):
    root = copy_package(tmp_path, keep_library=False)
    result = run_with(root, CHECK, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ERROR:" in result.stdout
    assert "_gategru_ops.so) was not found" in result.stdout
    assert "pip install --no-build-isolation" in result.stdout


def test_other_tensorflow_version_says_how_to_fix(tmp_path):
    root = copy_package(tmp_path, keep_library=True, tf_version="2.0.0")
    result = run_with(root, CHECK, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "built against TensorFlow 2.0.0" in result.stdout
    assert "must match its TensorFlow version exactly" in result.stdout
