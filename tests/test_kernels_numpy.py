"""The pybind11 module (no TensorFlow involved) against the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_mask

from gategru import _kernels
from gategru.reference import gru_sequence_reference

OUTPUTS = ("h_seq", "h_last", "update", "reset", "candidate")
ISA_ORDER = ["baseline", "avx2", "avx512"]
BEST_ISA = _kernels.cpu_isa()


@pytest.fixture(params=ISA_ORDER)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per instruction set the CPU has, each through its own kernels."""
    if ISA_ORDER.index(request.param) > ISA_ORDER.index(BEST_ISA):
        pytest.skip(f"this CPU has no {request.param} (best: {BEST_ISA})")
    monkeypatch.setenv("GATEGRU_CPU_ISA", request.param)
    assert _kernels.cpu_isa() == request.param
    return request.param


def forward(prob: dict, **kwargs) -> dict:
    """_kernels.forward on a problem dict, its xw as the op's `inputs`."""
    return _kernels.forward(prob["xw"], prob["h0"], prob["recurrent_kernel"],
                            prob["recurrent_bias"], **kwargs)


def random_problem(rng: np.random.Generator, batch: int, time: int, units: int) -> dict:
    return {
        "xw": rng.normal(size=(batch, time, 3 * units)),
        "h0": rng.normal(size=(batch, units)) * 0.5,
        "recurrent_kernel": rng.normal(size=(units, 3 * units)) / np.sqrt(units),
        "recurrent_bias": rng.normal(size=3 * units) * 0.3,
    }


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "right_padded", "holes"])
@pytest.mark.parametrize(("batch", "time", "units", "threads"), [
    (1, 23, 5, 1), (7, 13, 33, 2), (5, 9, 97, 2), (3, 1, 130, 0),
])
def test_forward_matches_oracle(isa, rng, reset_after, mask_kind, batch, time, units, threads):
    prob = random_problem(rng, batch, time, units)
    mask = random_mask(rng, batch, time, mask_kind)
    ref = gru_sequence_reference(**prob, mask=mask, reset_after=reset_after)
    out64 = forward(prob, mask=mask, reset_after=reset_after, threads=threads)
    out32 = forward(
        {k: v.astype(np.float32) for k, v in prob.items()},
        mask=mask, reset_after=reset_after, threads=threads,
    )
    for name in OUTPUTS:
        expected = getattr(ref, name)
        assert out64[name].dtype == np.float64 and out32[name].dtype == np.float32
        np.testing.assert_allclose(out64[name], expected, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(out32[name], expected, atol=2e-5, err_msg=name)


def test_outputs_start_on_cache_lines_and_streamed_gates_match_oracle(isa, rng):
    """Outputs are 64-byte aligned, as TensorFlow's are: gate tensors of 32 MB and more then
    take the kernels' streaming stores here too (unaligned, they would fall back to plain
    ones). Large ones start on 2 MB pages (fewer page faults). They match the oracle and
    are ordinary writeable arrays."""
    batch, time, units = 32, 1030, 128  # 33.7 MB per float64 gate tensor
    prob = random_problem(rng, batch, time, units)
    mask = random_mask(rng, batch, time, "holes")
    out = forward(prob, mask=mask, threads=2)
    ref = gru_sequence_reference(**prob, mask=mask)
    for name in OUTPUTS:
        assert out[name].ctypes.data % 64 == 0 and out[name].flags.writeable, name
        assert name == "h_last" or out[name].ctypes.data % (2 << 20) == 0, name
        np.testing.assert_allclose(out[name], getattr(ref, name), atol=1e-12, err_msg=name)
    small = random_problem(rng, 3, 4, 5)
    fwd = forward(small)
    grads = _kernels.backward(small["h0"], small["recurrent_kernel"], None, fwd["h_seq"],
                              fwd["update"], fwd["reset"], fwd["candidate"],
                              fwd["hu_candidate"], rng.normal(size=(3, 4, 5)))
    assert all(g.ctypes.data % 64 == 0 and g.flags.writeable for g in grads)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("batch", "time", "width", "units", "threads", "mask_kind"), [
    (1, 17, 1, 5, 1, "none"), (6, 11, 7, 33, 2, "holes"), (9, 5, 40, 18, 2, "right_padded"),
    (3, 4, 130, 64, 0, "none"),
])
def test_projection_inside_the_op_matches_oracle(isa, rng, reset_after, batch, time, width,
                                                 units, threads, mask_kind):
    """Passing x with the kernel gives what passing xw = x·W + b_in gives."""
    prob = random_problem(rng, batch, time, units)
    x = rng.normal(size=(batch, time, width))
    kernel = rng.normal(size=(width, 3 * units)) / np.sqrt(width)
    input_bias = rng.normal(size=3 * units) * 0.3
    mask = random_mask(rng, batch, time, mask_kind)
    xw = x @ kernel + input_bias
    ref = gru_sequence_reference(**dict(prob, xw=xw), mask=mask, reset_after=reset_after)
    for dtype, atol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        out = _kernels.forward(
            x.astype(dtype), prob["h0"].astype(dtype), prob["recurrent_kernel"].astype(dtype),
            prob["recurrent_bias"].astype(dtype), mask, reset_after=reset_after,
            threads=threads, kernel=kernel.astype(dtype), input_bias=input_bias.astype(dtype),
        )
        for name in OUTPUTS:
            assert out[name].dtype == dtype
            np.testing.assert_allclose(out[name], getattr(ref, name), atol=atol,
                                       err_msg=f"{name} {dtype.__name__}")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("project", [False, True])
@pytest.mark.parametrize(("batch", "time", "units", "mask_kind"), [
    (1, 1, 32, "none"), (3, 2, 64, "holes"), (9, 1, 32, "none"), (2, 2, 48, "right_padded"),
    (6, 1, 32, "holes"), (4, 2, 256, "holes"), (1, 2, 512, "none"), (1, 8, 64, "holes"),
    (2, 4, 32, "right_padded"), (6, 1, 768, "holes"), (5, 1, 1024, "holes"),
    (1, 16, 64, "holes"), (4, 4, 32, "right_padded"), (12, 1, 1024, "none"),
    (7, 1, 560, "holes"), (7, 1, 1024, "none"),
])
def test_few_steps_read_the_kernels_in_place(isa, rng, reset_after, project, batch, time,
                                             units, mask_kind):
    """A call that would read each packed panel at most twice (steps × row groups ≤ 2) and
    whose units fill whole vectors reads the kernels where they are, unpacked; these shapes
    take that path with every instruction set (9 rows: with AVX-512's 8-row groups only).
    Up to 4 rows and 16 rows × steps, the kernels are read row by row (row_stream_product),
    with an input width that leaves a remainder after its rows taken four at a time. 5-8
    rows at one step: at 1024 units (rows 12 KB apart) with every instruction set, at 768
    and 560 with 4-row groups (AVX2, the portable kernels), row by row; 6 rows at 32 units
    a unit block at a time; 12 rows never."""
    prob = random_problem(rng, batch, time, units)
    mask = random_mask(rng, batch, time, mask_kind)
    width = 23
    x = rng.normal(size=(batch, time, width))
    kernel = rng.normal(size=(width, 3 * units)) / np.sqrt(width)
    input_bias = rng.normal(size=3 * units) * 0.3
    if project:
        prob["xw"] = x @ kernel + input_bias
    ref = gru_sequence_reference(**prob, mask=mask, reset_after=reset_after)
    for dtype, atol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        cast = {k: v.astype(dtype) for k, v in prob.items()}
        extra = {}
        if project:
            cast["xw"] = x.astype(dtype)
            extra = {"kernel": kernel.astype(dtype), "input_bias": input_bias.astype(dtype)}
        out = forward(cast, mask=mask, reset_after=reset_after, threads=2, **extra)
        for name in OUTPUTS:
            np.testing.assert_allclose(out[name], getattr(ref, name), atol=atol,
                                       err_msg=f"{name} {dtype.__name__}")


def test_projection_arguments_are_checked(rng):
    prob = random_problem(rng, 2, 3, 4)
    x = rng.normal(size=(2, 3, 5))

    def call(**kw):
        args = dict(kernel=rng.normal(size=(5, 12)), input_bias=rng.normal(size=12)) | kw
        return _kernels.forward(args.pop("x", x), prob["h0"], prob["recurrent_kernel"],
                                prob["recurrent_bias"], **args)

    with pytest.raises(ValueError, match=r"`kernel` must have shape \(input_width, 3\*units\)"
                                         r".*got \(5, 13\)"):
        call(kernel=np.ones((5, 13)))
    with pytest.raises(ValueError, match=r"`kernel` must have shape.*got \(0, 12\)"):
        call(kernel=np.ones((0, 12)), x=np.ones((2, 3, 0)))
    with pytest.raises(ValueError, match=r"`inputs` must have shape \(batch, timesteps, "
                                         r"input_width\) = \(batch, timesteps, 5\).*\(2, 3, 6\)"):
        call(x=np.ones((2, 3, 6)))
    with pytest.raises(ValueError, match=r"`input_bias` must have shape \(12,\), got \(11,\)"):
        call(input_bias=np.ones(11))
    with pytest.raises(ValueError, match="`input_bias` is required with `kernel`"):
        call(input_bias=None)
    with pytest.raises(ValueError, match="`input_bias` needs `kernel`"):
        call(kernel=None, x=prob["xw"])


def _loss_and_weights(rng, ref):
    weights = {name: rng.normal(size=getattr(ref, name).shape) for name in OUTPUTS}

    def loss(r) -> float:
        return float(sum((weights[n] * getattr(r, n)).sum() for n in OUTPUTS))

    return loss, weights


def _assert_directional_derivatives(rng, prob, mask, reset_after, loss, d_xw, d_h0,
                                    directions: int) -> None:
    """<d_xw, dx> + <d_h0, dh> against central differences of the oracle's loss."""
    eps = 1e-6
    for _ in range(directions):
        dx = rng.normal(size=prob["xw"].shape)
        dh = rng.normal(size=prob["h0"].shape)

        def at(sign: float, dx=dx, dh=dh) -> float:
            moved = dict(prob, xw=prob["xw"] + sign * eps * dx, h0=prob["h0"] + sign * eps * dh)
            return loss(gru_sequence_reference(**moved, mask=mask, reset_after=reset_after))

        numeric = (at(1.0) - at(-1.0)) / (2 * eps)
        analytic = float((d_xw * dx).sum() + (d_h0 * dh).sum())
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
# 29 units: the backward's two-vector blocks (AVX2 8 + 8, AVX-512 16 + 16) end in a partial
# second vector
@pytest.mark.parametrize(("batch", "time", "units", "threads"),
                         [(3, 11, 6, 1), (4, 7, 37, 2), (5, 6, 29, 2)])
def test_backward_matches_finite_differences(isa, rng, reset_after, mask_kind, batch, time, units,
                                             threads):
    """Directional derivatives of a loss on every output, gates included."""
    prob = random_problem(rng, batch, time, units)
    mask = random_mask(rng, batch, time, mask_kind)
    ref = gru_sequence_reference(**prob, mask=mask, reset_after=reset_after)
    loss, w = _loss_and_weights(rng, ref)
    out = forward(prob, mask=mask, reset_after=reset_after, threads=threads)
    d_xw, d_h0 = _kernels.backward(
        prob["h0"], prob["recurrent_kernel"], mask, out["h_seq"], out["update"], out["reset"],
        out["candidate"], out.get("hu_candidate"), w["h_seq"], w["h_last"], w["update"],
        w["reset"], w["candidate"], reset_after=reset_after, threads=threads,
    )
    _assert_directional_derivatives(rng, prob, mask, reset_after, loss, d_xw, d_h0, 3)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("batch", "time", "units", "mask_kind"), [
    (1, 1, 32, "none"), (3, 2, 64, "holes"), (8, 1, 32, "holes"), (2, 2, 64, "right_padded"),
    (9, 1, 32, "none"), (5, 3, 32, "holes"),
])
def test_few_steps_backward_reads_the_kernel_in_place(isa, rng, reset_after, batch, time,
                                                      units, mask_kind):
    """A backward that would read each block of the transposed panels at most twice (steps ×
    row groups ≤ 2) reads U's rows in place, a dot product per unit: every shape here but
    the last (3 steps) with 4-row groups, and 9 rows only with AVX-512's 8-row groups.
    Float64 against directional derivatives of the oracle, float32 against float64."""
    prob = random_problem(rng, batch, time, units)
    mask = random_mask(rng, batch, time, mask_kind)
    ref = gru_sequence_reference(**prob, mask=mask, reset_after=reset_after)
    loss, w = _loss_and_weights(rng, ref)

    def grads(dtype):
        cast = {k: v.astype(dtype) for k, v in prob.items()}
        out = forward(cast, mask=mask, reset_after=reset_after, threads=2)
        return _kernels.backward(
            cast["h0"], cast["recurrent_kernel"], mask, out["h_seq"], out["update"],
            out["reset"], out["candidate"], out.get("hu_candidate"),
            *(w[n].astype(dtype) for n in ("h_seq", "h_last", "update", "reset", "candidate")),
            reset_after=reset_after, threads=2,
        )

    d_xw, d_h0 = grads(np.float64)
    _assert_directional_derivatives(rng, prob, mask, reset_after, loss, d_xw, d_h0, 2)
    d_xw32, d_h032 = grads(np.float32)
    for got, want in ((d_xw32, d_xw), (d_h032, d_h0)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(("batch", "time", "units"), [(0, 4, 3), (3, 0, 3), (3, 1, 3), (4, 5, 1)])
def test_edge_sizes_forward_and_backward(isa, rng, reset_after, batch, time, units):
    """Batch 0, no step, one step, one unit: outputs against the oracle, and the backward
    against directional derivatives of it (also run under the sanitizers)."""
    prob = random_problem(rng, batch, time, units)
    mask = random_mask(rng, batch, time, "holes") if batch and time else None
    ref = gru_sequence_reference(**prob, mask=mask, reset_after=reset_after)
    out = forward(prob, mask=mask, reset_after=reset_after, threads=2)
    for name in OUTPUTS:
        np.testing.assert_allclose(out[name], getattr(ref, name), atol=1e-12, err_msg=name)
    loss, w = _loss_and_weights(rng, ref)
    d_xw, d_h0 = _kernels.backward(
        prob["h0"], prob["recurrent_kernel"], mask, out["h_seq"], out["update"], out["reset"],
        out["candidate"], out.get("hu_candidate"), w["h_seq"], w["h_last"], w["update"],
        w["reset"], w["candidate"], reset_after=reset_after, threads=2,
    )
    assert d_xw.shape == prob["xw"].shape and d_h0.shape == prob["h0"].shape
    if time == 0:  # no step: the last state is h0, so its gradient passes straight through
        np.testing.assert_array_equal(d_h0, w["h_last"])
    _assert_directional_derivatives(rng, prob, mask, reset_after, loss, d_xw, d_h0, 1)


def test_bad_shapes_name_the_argument(rng):
    prob = random_problem(rng, 2, 3, 4)
    with pytest.raises(ValueError, match=r"`h0` must have shape \(2, 4\), got \(3, 4\)"):
        forward(dict(prob, h0=np.ones((3, 4))))
    with pytest.raises(ValueError, match="recurrent_kernel"):
        forward(dict(prob, recurrent_kernel=np.ones((4, 11))))
    with pytest.raises(ValueError, match=r"`inputs` \(the projections xw, no `kernel` given\)"):
        forward(dict(prob, xw=np.ones((2, 3, 13))))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 3\)"):
        forward(prob, mask=np.ones((2, 4), bool))
    with pytest.raises(TypeError, match="float32 or float64"):
        forward(dict(prob, xw=prob["xw"].astype(np.float16)))
    # As for the op, a (0,) mask means none.
    np.testing.assert_array_equal(forward(prob, mask=np.zeros((0,), bool))["h_seq"],
                                  forward(prob)["h_seq"])


def test_backward_bad_shapes_name_the_argument(rng):
    """The numpy backward uses the op's own rules (shape_check.cc), so it says the same."""
    prob = random_problem(rng, 2, 3, 4)
    out = forward(prob)
    seq = out["h_seq"]
    args = dict(h0=prob["h0"], u=prob["recurrent_kernel"], mask=None, h_seq=seq,
                z=out["update"], r=out["reset"], hc=out["candidate"], hu=out["hu_candidate"],
                d_h_seq=np.ones_like(seq), d_h_last=None, d_z=None, d_r=None, d_hc=None)

    def call(**changes):
        a = dict(args, **changes)
        return _kernels.backward(*a.values(), reset_after=True)

    d_xw, d_h0 = call()
    assert d_xw.shape == (2, 3, 12) and np.isfinite(d_xw).all()
    with pytest.raises(ValueError, match=r"`h0` must have shape \(2, 4\), got \(3, 4\)"):
        call(h0=np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"`d_h_last` must have shape \(2, 4\), got \(2, 5\)"):
        call(d_h_last=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"`d_reset` must have shape \(2, 3, 4\)"):
        call(d_r=np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 3\)"):
        call(mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="`hu_candidate` is required when reset_after=True"):
        call(hu=None)
    with pytest.raises(ValueError, match=r"`h_seq` must have shape \(batch, timesteps, units\)"):
        call(h_seq=seq[0])
    # The op's "absent" shapes mean absent here too: a (0,) mask, an all-zero gate gradient.
    same = call(mask=np.zeros((0,), bool), d_z=np.zeros((0, 0, 0)))
    np.testing.assert_array_equal(same[0], d_xw)


def test_nan_stays_in_its_row_and_huge_inputs_saturate(isa, rng):
    prob = random_problem(rng, 4, 10, 8)
    prob["xw"][1, 3, 5] = np.nan
    prob["xw"][2] *= 1e30  # saturates every gate of row 2
    out = forward(prob, threads=2)
    assert np.isnan(out["h_seq"][1, 3:]).any()
    clean = np.delete(np.arange(4), 1)
    for name in OUTPUTS:
        assert np.isfinite(out[name][clean]).all(), name
    for name in ("update", "reset"):
        assert set(np.unique(out[name][2])) <= {0.0, 1.0}
    assert set(np.unique(out["candidate"][2])) <= {-1.0, 1.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
def test_rows_split_over_workers(isa, rng, reset_after, dtype):
    """Enough rows and units that a step's rows are cut into several chunks with the
    AVX2 and AVX-512 kernels, with a partial last row group and unit block: the oracle
    holds, and 1, 2 and 3 workers agree bit for bit, forward and backward."""
    prob = random_problem(rng, 61, 5, 150)
    mask = random_mask(rng, 61, 5, "holes")
    ref = gru_sequence_reference(**prob, mask=mask, reset_after=reset_after)
    loss, w = _loss_and_weights(rng, ref)
    prob_t = {k: v.astype(dtype) for k, v in prob.items()}
    w_t = {k: v.astype(dtype) for k, v in w.items()}
    runs = []
    for threads in (1, 2, 3):
        out = forward(prob_t, mask=mask, reset_after=reset_after, threads=threads)
        grads = _kernels.backward(
            prob_t["h0"], prob_t["recurrent_kernel"], mask, out["h_seq"], out["update"],
            out["reset"], out["candidate"], out.get("hu_candidate"), w_t["h_seq"],
            w_t["h_last"], w_t["update"], w_t["reset"], w_t["candidate"],
            reset_after=reset_after, threads=threads,
        )
        runs.append([out[name] for name in OUTPUTS] + list(grads))
    atol = 1e-12 if dtype == np.float64 else 2e-5
    for name, got in zip(OUTPUTS, runs[0][: len(OUTPUTS)], strict=True):
        np.testing.assert_allclose(got, getattr(ref, name), atol=atol, err_msg=name)
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    dx, dh = rng.normal(size=prob["xw"].shape), rng.normal(size=prob["h0"].shape)
    eps = 1e-6

    def at(sign: float) -> float:
        moved = dict(prob, xw=prob["xw"] + sign * eps * dx, h0=prob["h0"] + sign * eps * dh)
        return loss(gru_sequence_reference(**moved, mask=mask, reset_after=reset_after))

    d_xw, d_h0 = runs[0][len(OUTPUTS):]
    numeric = (at(1.0) - at(-1.0)) / (2 * eps)
    analytic = float((d_xw * dx).sum() + (d_h0 * dh).sum())
    # <grad, d> is about ‖grad‖ in size but can cancel to near 0, so the tolerance is
    # relative to ‖grad‖ (as in grad_checks.py), not to the derivative: float32 errors
    # reached 6e-7·‖grad‖ over 120 draws, and the derivative fell to 0.003·‖grad‖.
    norm = float(np.sqrt(np.sum(np.square(d_xw, dtype=np.float64))
                         + np.sum(np.square(d_h0, dtype=np.float64))))
    rel = 1e-8 if dtype == np.float64 else 1e-4
    assert abs(analytic - numeric) <= rel * max(1.0, norm, abs(numeric)), (analytic, numeric)
