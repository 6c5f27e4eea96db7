"""gategru: a fused GRU for TensorFlow/Keras that returns its gate activations.

Importing gategru registers its TensorFlow ops (so SavedModels that use them load after
``import gategru``). A missing or mismatched op library does not fail the import: the error,
with what to do, comes at first use, and the numpy-only parts keep working.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

from gategru.layers import GateGRU  # registers the layer for .keras loading
from gategru.ops import GruSequence, OpLibraryError, gru_sequence, load_library, op_library_path

__version__ = "0.1.0"

with contextlib.suppress(OpLibraryError):
    load_library()  # on failure the error, with the fix, comes from whatever needs the op

# Heavier or optional pieces load on first use.
_LAZY = {
    "plot_gates": "gategru.plotting",
    "plot_saturation": "gategru.plotting",
    "gate_summary": "gategru.plotting",
    "capture": "gategru.probe",
    "CaptureError": "gategru.probe",
    "GateProbe": "gategru.probe",
    "capture_to_file": "gategru.streaming",
    "iter_gate_chunks": "gategru.streaming",
    "stream_stats": "gategru.streaming",
    "StreamResult": "gategru.streaming",
    "GateStats": "gategru.stats",
    "load_gates": "gategru.gate_files",
    "GateMonitor": "gategru.monitor",
}
__all__ = [
    "CaptureError",
    "GateGRU",
    "GateMonitor",
    "GateProbe",
    "GateStats",
    "GruSequence",
    "OpLibraryError",
    "StreamResult",
    "capture",
    "capture_to_file",
    "gate_summary",
    "gru_sequence",
    "iter_gate_chunks",
    "load_gates",
    "load_library",
    "op_library_path",
    "plot_gates",
    "plot_saturation",
    "stream_stats",
]

if TYPE_CHECKING:
    from gategru.gate_files import load_gates as load_gates
    from gategru.monitor import GateMonitor as GateMonitor
    from gategru.plotting import gate_summary as gate_summary
    from gategru.plotting import plot_gates as plot_gates
    from gategru.plotting import plot_saturation as plot_saturation
    from gategru.probe import CaptureError as CaptureError
    from gategru.probe import GateProbe as GateProbe
    from gategru.probe import capture as capture
    from gategru.stats import GateStats as GateStats
    from gategru.streaming import StreamResult as StreamResult
    from gategru.streaming import capture_to_file as capture_to_file
    from gategru.streaming import iter_gate_chunks as iter_gate_chunks
    from gategru.streaming import stream_stats as stream_stats


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gategru' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
