"""``GateGRU``: ``keras.layers.GRU`` on the fused op, optionally returning its gates."""

from __future__ import annotations

import functools
import inspect

import keras
import tensorflow as tf
from keras import activations

from gategru import ops as gate_ops
from gategru._fallback import gru_loop_with_gates

GATE_NAMES = ("update", "reset", "candidate")


def _is_default(fn: object, name: str) -> bool:
    return fn is activations.get(name)


@functools.cache
def _op_projects_inputs() -> bool:
    """Whether the op should project the inputs itself: where it runs on the CPU. With
    CUDA kernels and a visible GPU, TF places the op there and cuBLAS projects faster.
    (Visible devices are fixed once TensorFlow has started: asked once per process.)"""
    from gategru import _build_info

    return not (_build_info.WITH_CUDA and tf.config.list_logical_devices("GPU"))


def _called_by_bidirectional(depth: int = 24) -> bool:
    """Whether a keras.layers.Bidirectional is among the nearest callers. The wrapper gives
    the layers it builds no reference to itself, so the stack is the only place to ask."""
    frame = inspect.currentframe()
    try:
        for _ in range(depth):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return False
            if isinstance(frame.f_locals.get("self"), keras.layers.Bidirectional):
                return True
        return False
    finally:
        del frame  # no reference cycle through the frames


@keras.saving.register_keras_serializable(package="gategru")
class GateGRU(keras.layers.GRU):
    """A drop-in ``keras.layers.GRU`` that runs as one fused op and can return its gates.

    Takes every argument of ``keras.layers.GRU`` with the same defaults and meaning, and
    the same weights (``kernel``, ``recurrent_kernel``, ``bias``), so
    ``layer.set_weights(gru.get_weights())`` reproduces a Keras GRU. One more argument:

    Args:
      return_gates: also return ``{"update": z, "reset": r, "candidate": h̃}``, each of
        shape (batch, timesteps, units) in the layer's compute dtype, in the time order of
        the returned sequence (processing order with ``go_backwards``), 0 at masked steps.
        The call then returns ``(output, gates)`` or, with ``return_state``,
        ``(output, state, gates)``.

    Non-default activations and ``recurrent_dropout`` in training run a per-step loop
    (Keras's generic path) that still returns the gates; everything else runs the op.
    ``use_cudnn`` is accepted for compatibility and has no effect.
    """

    def __init__(self, units: int, return_gates: bool = False, **kwargs: object) -> None:
        super().__init__(units, **kwargs)
        self.return_gates = bool(return_gates)
        self.supports_jit = False  # a custom op has no XLA kernel
        gate_ops.load_library()  # fail at construction, with the fix, not mid-graph

    def get_config(self) -> dict:
        return {**super().get_config(), "return_gates": self.return_gates}

    # ---- shapes and masks ----------------------------------------------------------------
    def _gate_shapes(self, sequences_shape: tuple) -> dict:
        shape = (sequences_shape[0], sequences_shape[1], self.units)
        return {name: shape for name in GATE_NAMES}

    def _refuse_bidirectional(self) -> None:
        if self.return_gates and _called_by_bidirectional():
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has return_gates=True inside "
                "keras.layers.Bidirectional, which merges two output sequences and has no "
                "place for the gate dicts. Use return_gates=False there, and "
                "gategru.capture(model, x) to read both directions' gates "
                "('<name>/forward' and '<name>/backward')."
            )

    def compute_output_shape(self, sequences_shape: tuple, initial_state_shape: tuple = None):
        base = super().compute_output_shape(sequences_shape, initial_state_shape)
        if not self.return_gates:
            return base
        self._refuse_bidirectional()
        parts = base if self.return_state else (base,)
        return (*parts, self._gate_shapes(sequences_shape))

    def compute_mask(self, inputs: object, mask: object = None):
        base = super().compute_mask(inputs, mask)
        if not self.return_gates:
            return base
        step_mask = keras.tree.flatten(mask)[0] if mask is not None else None
        parts = list(base) if self.return_state else [base]
        return [*parts, {name: step_mask for name in GATE_NAMES}]

    # ---- the forward pass ------------------------------------------------------------------
    def _check_inputs(self, sequences: tf.Tensor) -> None:
        if sequences.shape.rank != 3:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects inputs of shape "
                f"(batch, timesteps, features), got shape {tuple(sequences.shape)}"
            )
        built = self.cell.kernel.shape[0]
        width = sequences.shape[-1]
        if width is not None and width != built:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' was built for inputs of width {built} "
                f"(kernel shape {tuple(self.cell.kernel.shape)}), got inputs of shape "
                f"{tuple(sequences.shape)}"
            )

    def _uses_op(self, training: bool) -> bool:
        cell = self.cell
        return (
            _is_default(cell.activation, "tanh")
            and _is_default(cell.recurrent_activation, "sigmoid")
            and not (training and cell.recurrent_dropout > 0)
        )

    def call(
        self,
        sequences: tf.Tensor,
        initial_state: object = None,
        mask: object = None,
        training: bool = False,
    ):
        self._refuse_bidirectional()
        sequences = tf.convert_to_tensor(sequences)
        self._check_inputs(sequences)
        if initial_state is None:
            if self.stateful:
                initial_state = self.states
            else:
                initial_state = self.get_initial_state(batch_size=tf.shape(sequences)[0])
        h0 = keras.tree.flatten(initial_state)[0]
        h0 = tf.cast(h0, self.compute_dtype)
        if h0.shape.rank != 2 or (h0.shape[-1] is not None and h0.shape[-1] != self.units):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': initial_state must have shape "
                f"(batch, {self.units}), got {tuple(h0.shape)}"
            )
        if mask is not None:
            mask = tf.cast(keras.tree.flatten(mask)[0], tf.bool)

        # Same dropout-mask bookkeeping as keras.layers.RNN, so seeds give Keras's masks.
        self._maybe_config_dropout_masks(self.cell, self._step_like(sequences), [h0])
        h_seq, h_last, gates = self._run(sequences, h0, mask, training)
        self._maybe_reset_dropout_masks(self.cell)

        h_seq = tf.cast(h_seq, self.compute_dtype)
        h_last = tf.cast(h_last, self.compute_dtype)
        if self.stateful:
            for variable in keras.tree.flatten(self.states):
                variable.assign(tf.cast(h_last, variable.dtype))

        output = h_seq if self.return_sequences else self._last_output(h_seq)
        outputs = (output, h_last) if self.return_state else (output,)
        if self.return_gates:
            outputs += ({k: tf.cast(v, self.compute_dtype) for k, v in gates.items()},)
        return outputs if len(outputs) > 1 else outputs[0]

    @staticmethod
    def _step_like(sequences: tf.Tensor) -> tf.Tensor:
        """A (batch, features) tensor for shaping dropout masks; works with 0 timesteps."""
        return tf.zeros([tf.shape(sequences)[0], sequences.shape[-1]], sequences.dtype)

    @staticmethod
    def _last_output(h_seq: tf.Tensor) -> tf.Tensor:
        # No step ran with 0 timesteps: the output is the masked-step convention's 0.
        if h_seq.shape[1] == 0:
            return tf.zeros(tf.stack([tf.shape(h_seq)[0], tf.shape(h_seq)[2]]), h_seq.dtype)
        return h_seq[:, -1]

    def _run(self, sequences: tf.Tensor, h0: tf.Tensor, mask: tf.Tensor | None, training: bool):
        """Returns (h_seq, h_last, gates) in processing order, in the op's dtype."""
        op_dtype = tf.float64 if self.compute_dtype == "float64" else tf.float32
        cell = self.cell
        x = tf.cast(sequences, op_dtype)
        h0 = tf.cast(h0, op_dtype)
        if self.go_backwards:
            x = tf.reverse(x, axis=[1])
            mask = None if mask is None else tf.reverse(mask, axis=[1])

        if not self._uses_op(training):
            h_seq, h_last, gates = gru_loop_with_gates(cell, x, h0, mask, training, op_dtype)
        else:
            b_in, b_rec = self._split_bias(op_dtype)
            inputs, kernel, input_bias = self._op_inputs(x, sequences, b_in, training, mask)
            res = gate_ops.gru_sequence(
                inputs,
                h0,
                tf.cast(cell.recurrent_kernel, op_dtype),
                b_rec,
                mask,
                reset_after=cell.reset_after,
                # training keeps the gates and the cache: backward needs them, and
                # recomputing them would cost another forward pass
                with_gates=self.return_gates or bool(training),
                keep_cache=bool(training),
                kernel=kernel,
                input_bias=input_bias,
            )
            h_seq, h_last = res.h_seq, res.h_last
            gates = dict(zip(GATE_NAMES, (res.update, res.reset, res.candidate), strict=True))
        if self.zero_output_for_mask and mask is not None:
            h_seq = tf.where(mask[..., None], h_seq, tf.zeros_like(h_seq))
        return h_seq, h_last, gates

    def _op_inputs(
        self,
        x: tf.Tensor,
        sequences: tf.Tensor,
        b_in: tf.Tensor,
        training: bool,
        step_mask: tf.Tensor | None,
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
        """(inputs, kernel, input_bias) for the op, with Keras's input dropout: one mask
        for all steps, or one per gate with implementation=1. The op projects x itself
        when it runs on the CPU; on a GPU (and with three masks), xw = x·W + b_in is a
        tf.matmul here."""
        kernel = tf.cast(self.cell.kernel, x.dtype)
        mask = self.cell.get_dropout_mask(self._step_like(sequences)) if training else None
        if mask is not None and not self.cell.dropout > 0:
            mask = None
        per_gate = isinstance(mask, (list, tuple))
        if step_mask is not None and (per_gate or not _op_projects_inputs()):
            # The projection happens here. Masked steps are never read, but NaN or Inf
            # padding there would reach the kernel's gradient (as NaN·0) for every row.
            x = tf.where(step_mask[..., None], x, tf.zeros([], x.dtype))
        if mask is None:
            dropped = x
        elif not per_gate:
            dropped = x * tf.cast(mask, x.dtype)[:, None]
        else:
            blocks = tf.split(kernel, 3, axis=1)
            xw = tf.concat(
                [
                    tf.einsum("bti,ij->btj", x * tf.cast(m, x.dtype)[:, None], w)
                    for m, w in zip(mask, blocks, strict=True)
                ],
                axis=-1,
            )
            return tf.nn.bias_add(xw, b_in), None, None
        if _op_projects_inputs():
            return dropped, kernel, b_in
        # bias_add, not +: it can write into the projection's buffer instead of a copy
        return tf.nn.bias_add(tf.einsum("bti,ij->btj", dropped, kernel), b_in), None, None

    def _split_bias(self, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
        cell = self.cell
        zeros = tf.zeros([3 * self.units], dtype)
        if not cell.use_bias:
            return zeros, zeros
        bias = tf.cast(cell.bias, dtype)
        if cell.reset_after:
            return bias[0], bias[1]
        return bias, zeros
