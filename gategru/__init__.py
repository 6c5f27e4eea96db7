"""gategru: a fused GRU for TensorFlow/Keras that returns its gate activations.

The public names load lazily, so ``import gategru`` (and the command line's ``--help``)
does not pay for importing TensorFlow until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "GateGRU": "gategru.layers",
    "GruSequence": "gategru.ops",
    "OpLibraryError": "gategru.ops",
    "gru_sequence": "gategru.ops",
    "load_library": "gategru.ops",
    "plot_gates": "gategru.plotting",
    "gate_summary": "gategru.plotting",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from gategru.layers import GateGRU as GateGRU
    from gategru.ops import GruSequence as GruSequence
    from gategru.ops import OpLibraryError as OpLibraryError
    from gategru.ops import gru_sequence as gru_sequence
    from gategru.ops import load_library as load_library
    from gategru.plotting import gate_summary as gate_summary
    from gategru.plotting import plot_gates as plot_gates


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gategru' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
