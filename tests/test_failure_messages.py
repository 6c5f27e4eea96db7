"""What a user sees when the op library is missing, broken or built for another TensorFlow."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gategru.ops import _REBUILD

INSTALLED = Path(importlib.util.find_spec("gategru").origin).parent

# The line a user copies: written out here, not read from gategru, so a change to it shows.
PIP_HINT = "`pip install --no-build-isolation --force-reinstall --no-deps .`"


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
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(root)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


CHECK = """
    import sys
    import numpy as np
    import gategru
    from gategru.reference import gru_sequence_reference
    from gategru import _kernels
    assert gategru.__file__.startswith(sys.argv[1]), gategru.__file__  # the copy, not ours
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
        first = str(err)
        try:  # a second use fails the same way: nothing half-loaded was kept
            gategru.gru_sequence(xw, h0, u, b)
        except gategru.OpLibraryError as again:
            assert str(again) == first, (str(again), first)
            print("SAME ERROR AGAIN")
"""


def check(root: Path, cwd: Path) -> str:
    """Runs CHECK against the package copy under root; returns the error message."""
    result = run_with(root, CHECK, cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR: ")]
    assert len(lines) == 1, result.stdout[-2000:]
    assert "SAME ERROR AGAIN" in result.stdout, result.stdout[-2000:]
    message = lines[0][len("ERROR: "):]
    assert message.endswith(" " + _REBUILD), message
    assert PIP_HINT in message, message
    return message


def test_missing_op_library_says_how_to_fix(tmp_path):
    root = copy_package(tmp_path, keep_library=False)
    message = check(root, tmp_path)
    assert "_gategru_ops.so) was not found" in message


def test_other_tensorflow_version_says_how_to_fix(tmp_path):
    root = copy_package(tmp_path, keep_library=True, tf_version="2.0.0")
    message = check(root, tmp_path)
    assert "built against TensorFlow 2.0.0" in message
    assert "must match its TensorFlow version exactly" in message


def test_missing_build_info_says_how_to_fix(tmp_path):
    root = copy_package(tmp_path, keep_library=True)
    (root / "gategru" / "_build_info.py").unlink()
    message = check(root, tmp_path)
    assert message == "gategru's build information is missing. " + _REBUILD


def compile_library(source: str, target: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None, "no C compiler to build the stand-in library"
    c_file = target.with_suffix(".c")
    c_file.write_text(source)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(target), str(c_file)], check=True)
    c_file.unlink()


@pytest.mark.parametrize("kind", ["not_a_library", "undefined_symbol"])
def test_unloadable_op_library_says_how_to_fix(tmp_path, kind):
    """tf.load_op_library fails: a file that is no shared library (a truncated download), or
    one that needs symbols this TensorFlow lacks (as one built against another does)."""
    root = copy_package(tmp_path, keep_library=True)
    library = root / "gategru" / "_gategru_ops.so"
    library.unlink()
    if kind == "not_a_library":
        library.write_bytes(b"this is not a shared library\n")
        cause = "file too short"
    else:
        compile_library("extern int gategru_missing_tf_symbol(void);\n"
                        "int gategru_probe(void) { return gategru_missing_tf_symbol(); }\n",
                        library)
        cause = "undefined symbol: gategru_missing_tf_symbol"
    message = check(root, tmp_path)
    assert message.startswith(f"Loading {library} failed: "), message
    assert cause in message, message


def test_library_without_the_ops_says_how_to_fix(tmp_path):
    """A valid shared library that defines none of the ops (here: the numpy module)."""
    root = copy_package(tmp_path, keep_library=True)
    library = root / "gategru" / "_gategru_ops.so"
    library.unlink()
    shutil.copy(next((root / "gategru").glob("_kernels*.so")), library)
    message = check(root, tmp_path)
    assert str(library) in message, message
    assert "does not define gate_gru_forward, gate_gru_backward" in message, message
