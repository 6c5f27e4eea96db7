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
from gategru.ops import GruSequence, OpLibraryError, gru_sequence, load_library

__version__ = "0.1.0"

with contextlib.suppress(OpLibraryError):
    load_library()  # on failure the error, with the fix, comes from whatever needs the op

# Heavier or optional pieces load on first use.
_LAZY = {
    "plot_gates": "gategru.plotting",
    "gate_summary": "gategru.plotting",
}
__all__ = [
    "GateGRU",
    "GruSequence",
    "OpLibraryError",
    "gate_summary",
    "gru_sequence",
    "load_library",
    "plot_gates",
]

if TYPE_CHECKING:
    from gategru.plotting import gate_summary as gate_summary
    from gategru.plotting import plot_gates as plot_gates


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gategru' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
