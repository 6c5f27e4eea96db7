"""What gpu_device_check.py's stages share: the log line, the record writer of a child
process, and loading the built module and the float64 oracle by path (no TensorFlow)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Recorder:
    def __init__(self, path: str):
        self.file = open(path, "a")  # noqa: SIM115 - kept open for the child's life

    def __call__(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


def load_module(path: str):
    loader = importlib.machinery.ExtensionFileLoader("_kernels", path)
    spec = importlib.util.spec_from_file_location("_kernels", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def load_reference():
    """gategru/reference.py by path (gategru/__init__ would want TensorFlow)."""
    spec = importlib.util.spec_from_file_location(
        "gategru_reference", ROOT / "gategru" / "reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
