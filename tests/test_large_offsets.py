"""Offsets past 2^31 elements: a (1, T, 3·128) input of more than 2^31 elements, mostly
masked so that only its last steps need real memory; the last steps must match the
oracle, which they cannot if any offset wrapped around in 32 bits."""

from __future__ import annotations

import numpy as np

from gategru import _kernels
from gategru.reference import gru_sequence_reference


def test_input_with_more_than_2_to_31_elements(rng):
    units, live = 128, 7
    time = 2**31 // (3 * units) + 1000  # xw has 2^31 + 384,000 elements
    assert time * 3 * units > 2**31
    xw = np.zeros((1, time, 3 * units), np.float32)  # untouched pages cost no memory
    xw[0, -live:] = rng.normal(size=(live, 3 * units))
    mask = np.zeros((1, time), bool)
    mask[0, -live:] = True
    h0 = rng.normal(size=(1, units)).astype(np.float32)
    u = (rng.normal(size=(units, 3 * units)) / np.sqrt(units)).astype(np.float32)
    b = rng.normal(size=3 * units).astype(np.float32)
    out = _kernels.forward(xw, h0, u, b, mask, with_gates=False, threads=1)
    ref = gru_sequence_reference(xw[:, -live:], h0, u, b)
    np.testing.assert_allclose(out["h_seq"][:, -live:], ref.h_seq, atol=2e-5)
    np.testing.assert_allclose(out["h_last"], ref.h_last, atol=2e-5)
    assert not out["h_seq"][0, : time - live].any()  # masked before any step: output 0


def test_projected_input_with_more_than_2_to_31_elements(rng):
    """The projecting form: x (1, T, I) past 2^31 elements, read at row·I offsets by the
    in-step projection. Masked steps cost no products, so only the live steps compute."""
    units, width, live = 8, 2049, 5
    time = 2**31 // width + 1000
    assert time * width > 2**31
    x = np.zeros((1, time, width), np.float32)  # untouched pages cost no memory
    x[0, -live:] = rng.normal(size=(live, width))
    mask = np.zeros((1, time), bool)
    mask[0, -live:] = True
    h0 = rng.normal(size=(1, units)).astype(np.float32)
    u = (rng.normal(size=(units, 3 * units)) / np.sqrt(units)).astype(np.float32)
    b = rng.normal(size=3 * units).astype(np.float32)
    kernel = (rng.normal(size=(width, 3 * units)) / np.sqrt(width)).astype(np.float32)
    b_in = rng.normal(size=3 * units).astype(np.float32)
    out = _kernels.forward(x, h0, u, b, mask, with_gates=True, threads=2, kernel=kernel,
                           input_bias=b_in)
    xw = x[:, -live:].astype(np.float64) @ kernel + b_in
    ref = gru_sequence_reference(xw, h0, u, b)
    np.testing.assert_allclose(out["h_seq"][:, -live:], ref.h_seq, atol=2e-5)
    np.testing.assert_allclose(out["update"][:, -live:], ref.update, atol=2e-5)
    np.testing.assert_allclose(out["h_last"], ref.h_last, atol=2e-5)
    assert not out["h_seq"][0, : time - live].any()
