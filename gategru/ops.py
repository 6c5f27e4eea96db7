"""The GateGru TensorFlow ops: loading the library, the public function, the gradient."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import tensorflow as tf

_REBUILD = (
    "Rebuild it against the TensorFlow you have: "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` in the gategru source tree "
    "(or run `./run test`, which does it)."
)

_T = TypeVar("_T")

_lock = threading.Lock()
_library = None


class OpLibraryError(ImportError):
    """The compiled op library is missing or does not match the installed TensorFlow."""


def _find(module: str) -> str | None:
    # find_spec, not __file__: editable installs keep the .so away from the sources.
    spec = importlib.util.find_spec(f"gategru.{module}")
    return spec.origin if spec is not None else None


def op_library_path() -> str:
    """The path of the compiled op library, ``_gategru_ops.so``.

    A process that serves a SavedModel with GateGRU but does not import gategru must load
    this file first: ``tf.load_op_library(path)`` in Python, ``TF_LoadLibrary`` in C.
    """
    path = _find("_gategru_ops")
    if path is None:
        package_dir = Path(__file__).resolve().parent
        hint = ""
        if (package_dir.parent / "CMakeLists.txt").exists():
            hint = (
                f" Python imported gategru from its source tree ({package_dir}), which "
                "holds no compiled files: run from another directory to use the "
                "installed package."
            )
        raise OpLibraryError(
            "gategru's op library (_gategru_ops.so) was not found: gategru was built "
            "without TensorFlow, or not built at all." + hint + " " + _REBUILD
        )
    return path


def load_library():
    """Loads the op library once, with a clear error when it is missing or mismatched."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        path = op_library_path()
        try:
            from gategru import _build_info
        except ImportError as err:
            raise OpLibraryError("gategru's build information is missing. " + _REBUILD) from err
        if tf.__version__ != _build_info.TF_VERSION:
            raise OpLibraryError(
                f"gategru's op library was built against TensorFlow {_build_info.TF_VERSION}, "
                f"but TensorFlow {tf.__version__} is installed; a custom op must match its "
                "TensorFlow version exactly. " + _REBUILD
            )
        try:
            library = tf.load_op_library(path)
        except tf.errors.OpError as err:  # not found, bad symbols, a malformed registration
            raise OpLibraryError(f"Loading {path} failed: {err}. " + _REBUILD) from err
        missing = [op for op in ("gate_gru_forward", "gate_gru_backward")
                   if not hasattr(library, op)]
        if missing:  # a stale build, or another library under our name
            raise OpLibraryError(
                f"{path} loaded but does not define {', '.join(missing)}: it is not a build "
                "of gategru's current ops. " + _REBUILD
            )
        _library = library
        return _library


class GruSequence(NamedTuple):
    """Outputs of :func:`gru_sequence` (the gates are None when not requested)."""

    h_seq: tf.Tensor
    h_last: tf.Tensor
    update: tf.Tensor | None
    reset: tf.Tensor | None
    candidate: tf.Tensor | None


# float16/bfloat16: CUDA kernels with float32 arithmetic; on the CPU, float32 kernels on
# widened copies (slower than float32 itself: for graphs built for a GPU).
_OP_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def _same_float_dtype(**tensors: tf.Tensor | None) -> list[tf.Tensor | None]:
    """Converts the inputs to tensors; all must share the first one's dtype, float32 or
    float64 (None passes through)."""
    converted = {
        name: None if value is None else tf.convert_to_tensor(value)
        for name, value in tensors.items()
    }
    first, first_value = next(iter(converted.items()))
    dtype = first_value.dtype
    if dtype not in _OP_DTYPES:
        raise TypeError(
            f"`{first}` must be float16, bfloat16, float32 or float64, got {dtype.name}"
        )
    for name, value in converted.items():
        if value is not None and value.dtype != dtype:
            raise TypeError(
                f"`{name}` has dtype {value.dtype.name}, but `{first}` is {dtype.name}: all "
                "float inputs of gru_sequence must share one dtype"
            )
    return list(converted.values())


def _no_mask() -> tf.Tensor:
    return tf.zeros([0], tf.bool)


def _absent(dtype: tf.DType) -> tf.Tensor:
    return tf.zeros([0], dtype)


def gru_sequence(
    inputs: tf.Tensor,
    h0: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    recurrent_bias: tf.Tensor,
    mask: tf.Tensor | None = None,
    reset_after: bool = True,
    with_gates: bool = True,
    keep_cache: bool = True,
    *,
    kernel: tf.Tensor | None = None,
    input_bias: tf.Tensor | None = None,
) -> GruSequence:
    """Runs a GRU over a whole sequence in one op and returns its gates.

    Args:
      inputs: without ``kernel``, the input projections xw = x·W + b_in, (batch,
        timesteps, 3*units) with gate blocks [z | r | h]; with ``kernel``, the inputs x
        themselves, (batch, timesteps, input_width).
      h0: (batch, units) initial state.
      recurrent_kernel: (units, 3*units), Keras's layout.
      recurrent_bias: (3*units,). With reset_after=False it acts as a second input bias.
      mask: (batch, timesteps) bool, or None. A masked step carries the state, repeats the
        previous output (0 before the first unmasked step) and has zero gates.
      reset_after: Keras's ``reset_after`` (True: the cuDNN-compatible variant).
      with_gates: write the gates (False: faster inference; the gradient still works).
      keep_cache: also keep what the gradient needs (False: faster inference with gates;
        a gradient then costs one more forward pass).
      kernel: (input_width, 3*units) input kernel W, or None. Given, the op projects each
        step's inputs itself (on the CPU inside the step, with no (batch, timesteps,
        3*units) tensor in memory; on a GPU with a simple kernel of its own).
      input_bias: (3*units,) b_in, with ``kernel`` (zeros if None).

    All float inputs share one dtype: float32 or float64, or float16/bfloat16 (computed in
    float32, each stored value rounded; on the CPU through float32 copies, so slower than
    float32). Differentiable in every float input, the gates included.
    """
    lib = load_library()
    if input_bias is not None and kernel is None:
        raise ValueError("`input_bias` needs `kernel`; without one, add it to the projections")
    inputs, h0, recurrent_kernel, recurrent_bias, kernel, input_bias = _same_float_dtype(
        inputs=inputs, h0=h0, recurrent_kernel=recurrent_kernel,
        recurrent_bias=recurrent_bias, kernel=kernel, input_bias=input_bias,
    )
    # Static ranks: the gradient picks its path (mask or not, kernel or not) by them.
    if kernel is None:
        kernel = input_bias = _absent(inputs.dtype)
    else:
        kernel = tf.ensure_shape(kernel, [None, None])
        if input_bias is None:
            input_bias = tf.zeros(tf.shape(kernel)[1:], inputs.dtype)
    mask = _no_mask() if mask is None else tf.ensure_shape(tf.cast(mask, tf.bool), [None, None])
    out = lib.gate_gru_forward(
        inputs=inputs,
        h0=h0,
        recurrent_kernel=recurrent_kernel,
        recurrent_bias=recurrent_bias,
        mask=mask,
        kernel=kernel,
        input_bias=input_bias,
        reset_after=reset_after,
        with_gates=with_gates,
        keep_cache=keep_cache,
    )
    gates = (out.update, out.reset, out.candidate) if with_gates else (None, None, None)
    return GruSequence(out.h_seq, out.h_last, *gates)


def _recurrent_kernel_grad(
    h_seq: tf.Tensor,
    h0: tf.Tensor,
    mask: tf.Tensor,
    d: tf.Tensor,
    scale: tf.Tensor | None = None,
) -> tf.Tensor:
    """Σ over rows and steps of (scale ⊙ h_prev)ᵀ·d, h_prev the state each step started
    from, without a copy of the previous states. Flattened to (B·T) rows, a step's h_prev is
    h_seq's row before it, except at each batch row's first unmasked step, where it is h0
    (the masked steps before that output 0 and have d = 0: they add nothing). So one matmul
    pairs every row with the one before it, over slices that share h_seq's and d's buffers,
    and two (B,H)ᵀ·(B,N) products put h0 where that pairing is wrong. Against copying the
    previous states: S3 training 750–760 against 761–790 ms, 100 MB less at its peak
    (docs/cpu_performance.md)."""
    before = _rows(h_seq)[:-1]
    if scale is not None:
        before = _rows(scale)[1:] * before
    pairs = tf.matmul(before, _rows(d)[1:], transpose_a=True)

    def at_first_steps() -> tf.Tensor:
        first = None
        if mask.shape.rank == 2:
            first = tf.argmax(tf.cast(mask, tf.int32), axis=1, output_type=tf.int32)

        def at_first(t: tf.Tensor) -> tf.Tensor:
            return t[:, 0] if first is None else tf.gather(t, first, axis=1, batch_dims=1)

        h_first, crossed = h0, h_seq[:-1, -1]  # row b's step 0 was paired with row b-1's end
        if scale is not None:
            h_first, crossed = h_first * at_first(scale), crossed * scale[1:, 0]
        return (tf.matmul(h_first, at_first(d), transpose_a=True)
                - tf.matmul(crossed, d[1:, 0], transpose_a=True))

    has_steps = tf.shape(h_seq)[1] > 0
    return pairs + tf.cond(has_steps, at_first_steps, lambda: tf.zeros_like(pairs))


def _rows(t: tf.Tensor) -> tf.Tensor:
    """t (…, N) as the matrix of its rows, (rows, N): a reshape, no copy."""
    return tf.reshape(t, [-1, tf.shape(t)[-1]])


def _appended_ones(t: tf.Tensor) -> tf.Tensor:
    """t with a last column of ones: the matmul aᵀ·d of a weight gradient then also sums
    d's rows, a bias gradient, in the same pass over d (S2: 2.7 ms less than a second
    matmul, ones·d, for d_kernel and d_input_bias)."""
    ones = tf.ones(tf.concat([tf.shape(t)[:-1], [1]], axis=0), t.dtype)
    return tf.concat([t, ones], axis=-1)


def _weight_grad(a: tf.Tensor, d: tf.Tensor, sums: bool) -> tuple[tf.Tensor, tf.Tensor | None]:
    """aᵀ·d over all rows of a (…, K) and d (…, N): (K, N), and with sums (a's last column
    ones, see _appended_ones) also d's column sums (N,)."""
    product = tf.matmul(_rows(a), _rows(d), transpose_a=True)
    return (product[:-1], product[-1]) if sums else (product, None)


def _sum_rows(d: tf.Tensor) -> tf.Tensor:
    """Column sums of d (…, N) as ones·d: the matmul reads the rows about twice as fast as
    reduce_sum on the CPU (3.3 against 6.3 ms for S2's bias gradient)."""
    flat = _rows(d)
    ones = tf.ones(tf.stack([1, tf.shape(flat)[0]]), flat.dtype)
    return tf.matmul(ones, flat)[0]


class _InOrder:
    """Builds groups of ops that run one after another: each group's ops wait (control
    dependencies) for the previous group's results. TF would otherwise run the gradient's
    large matmuls side by side on its inter-op threads, each asking for every intra-op
    thread; on two cores, S3's training step then took 750 ms or 830–850 at random, and
    745–755 in order (docs/cpu_performance.md). In eager mode ops run in order anyway."""

    def __init__(self) -> None:
        self._last: list[tf.Tensor] = []

    def __call__(self, build: Callable[[], _T]) -> _T:
        with tf.control_dependencies(self._last):
            out = build()
        done = [t for t in tf.nest.flatten(out) if t is not None]
        if done:
            self._last = done
        return out


def _empty_if_none(grad: tf.Tensor | None, like: tf.Tensor) -> tf.Tensor:
    return tf.zeros([0, 0, 0], like.dtype) if grad is None else grad


@tf.RegisterGradient("GateGruForward")
def _gate_gru_forward_grad(op: tf.Operation, *grads: tf.Tensor | None):
    d_h_seq, d_h_last, d_update, d_reset, d_candidate, _ = grads
    inputs, h0, recurrent_kernel, bias, mask, kernel, input_bias = op.inputs
    reset_after = op.get_attr("reset_after")
    if mask.shape.rank is None or kernel.shape.rank is None:
        # The form (mask or none, x or xw) is chosen by rank here; guessing would be wrong.
        raise ValueError(
            "GateGruForward's gradient needs the static ranks of `mask` and `kernel` (rank 1, "
            "shape (0,), for none); gategru.gru_sequence sets them."
        )
    h_seq, _, update, reset, candidate, hu_candidate = op.outputs
    with_gates = op.get_attr("with_gates")
    if not with_gates or (reset_after and not op.get_attr("keep_cache")):
        # An inference-mode forward under a tape: recompute what backward needs.
        redo = load_library().gate_gru_forward(
            *op.inputs, reset_after=reset_after, with_gates=True
        )
        update, reset, candidate, hu_candidate = (
            redo.update, redo.reset, redo.candidate, redo.hu_candidate,
        )
        if not with_gates:  # gradients of the empty gate outputs mean nothing
            d_update = d_reset = d_candidate = None
    d_xw, d_h0, d_hu = load_library().gate_gru_backward(
        h0=h0,
        recurrent_kernel=recurrent_kernel,
        mask=mask,
        h_seq=h_seq,
        update=update,
        reset=reset,
        candidate=candidate,
        hu_candidate=hu_candidate,
        d_h_seq=tf.zeros_like(h_seq) if d_h_seq is None else d_h_seq,
        d_h_last=tf.zeros_like(h0) if d_h_last is None else d_h_last,
        d_update=_empty_if_none(d_update, h0),
        d_reset=_empty_if_none(d_reset, h0),
        d_candidate=_empty_if_none(d_candidate, h0),
        reset_after=reset_after,
    )
    # Weight gradients are sums over all steps: a few large matmuls, not per-step work. A
    # tape names the inputs nobody wants a gradient of (data fed to a first layer, biases
    # of use_bias=False): their matmuls are skipped, as TF's MatMul gradient skips them
    # for Keras's GRU.
    skip = getattr(op, "skip_input_indices", None) or ()
    want_bias = 3 not in skip
    units = tf.shape(h0)[1]
    in_order = _InOrder()
    if reset_after:  # d_hu = [d_z, d_r, d_h·r], the gradient of h_prev·U + b_rec
        d_recurrent = in_order(lambda: _recurrent_kernel_grad(h_seq, h0, mask, d_hu))
        d_bias = in_order(lambda: _sum_rows(d_hu)) if want_bias else None
    else:  # the candidate's product is (r ⊙ h_prev)·U_h
        d_zr = in_order(lambda: _recurrent_kernel_grad(h_seq, h0, mask, d_xw[..., : 2 * units]))
        d_h = in_order(
            lambda: _recurrent_kernel_grad(h_seq, h0, mask, d_xw[..., 2 * units :], scale=reset)
        )
        d_recurrent = tf.concat([d_zr, d_h], axis=1)
        d_bias = None  # Σ d_xw, the input bias's sum: taken once below
    bias_is_input_sum = want_bias and not reset_after
    if kernel.shape.rank == 1:  # inputs were the projections
        if bias_is_input_sum:
            d_bias = in_order(lambda: _sum_rows(d_xw))
        return (None if 0 in skip else d_xw), d_h0, d_recurrent, d_bias, None, None, None
    want_sums = 6 not in skip or bias_is_input_sum
    d_inputs = d_kernel = sums = None
    if 0 not in skip:
        # einsum runs BatchMatMulV2, which TF's oneDNN does 15–18% faster here than
        # MatMul(transpose_b) (S2 9.8 → 8.3 ms, S3 57 → 46.5); level with oneDNN off
        d_inputs = in_order(lambda: tf.einsum("btk,ik->bti", d_xw, kernel))
    if 5 not in skip:

        def kernel_grad() -> tuple[tf.Tensor, tf.Tensor | None]:
            x = inputs
            if mask.shape.rank == 2:
                # Masked steps never read x, and their d_xw is 0; but NaN or ±Inf padding
                # times 0 is NaN, which would spoil d_kernel for every row.
                x = tf.where(mask[..., None], x, tf.zeros([], x.dtype))
            if want_sums:
                x = _appended_ones(x)
            return _weight_grad(x, d_xw, sums=want_sums)

        d_kernel, sums = in_order(kernel_grad)
    elif want_sums:
        sums = in_order(lambda: _sum_rows(d_xw))
    if bias_is_input_sum:
        d_bias = sums
    return d_inputs, d_h0, d_recurrent, d_bias, None, d_kernel, None if 6 in skip else sums
