"""gategru: a fused GRU for TensorFlow/Keras that returns its gate activations."""

from gategru.layers import GateGRU
from gategru.ops import GruSequence, OpLibraryError, gru_sequence, load_library

__all__ = ["GateGRU", "GruSequence", "OpLibraryError", "gru_sequence", "load_library"]
__version__ = "0.1.0"
