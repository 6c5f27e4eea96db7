"""GateStats, fed in random chunks, against numpy over the whole array in float64."""

from __future__ import annotations

import numpy as np
import pytest

from gategru import GateStats
from gategru.plotting import gate_summary


def random_gates(rng, samples, time, units):
    # wide pre-activations: plenty of steps near both bounds
    pre = rng.normal(scale=3.0, size=(3, samples, time, units)) + rng.normal(size=units)
    sig = 1.0 / (1.0 + np.exp(-pre[:2]))
    return {"update": sig[0], "reset": sig[1], "candidate": np.tanh(pre[2])}


def split_time(gates, mask, cuts):
    bounds = [0, *cuts, next(iter(gates.values())).shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yield {k: v[:, a:b] for k, v in gates.items()}, None if mask is None else mask[:, a:b]


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_equals_whole(rng, with_mask, dtype):
    samples, time, units = 3, int(rng.integers(50, 200)), 7
    gates = {k: v.astype(dtype) for k, v in random_gates(rng, samples, time, units).items()}
    mask = rng.random((samples, time)) > 0.3 if with_mask else None
    cuts = np.sort(rng.choice(np.arange(1, time), size=4, replace=False))
    stats = GateStats(saturation=0.05)
    for chunk, chunk_mask in split_time(gates, mask, cuts):
        stats.update(chunk, chunk_mask)

    keep = np.ones((samples, time), bool) if mask is None else mask
    assert stats.count == keep.sum()
    per_unit = stats.per_unit()
    for name, gate in gates.items():
        values = gate[keep].astype(np.float64)  # (steps, units)
        low_bound = -0.95 if name == "candidate" else 0.05
        np.testing.assert_allclose(per_unit[name]["mean"], values.mean(0), rtol=1e-10)
        np.testing.assert_allclose(per_unit[name]["std"], values.std(0), rtol=1e-6)
        np.testing.assert_array_equal(per_unit[name]["low"], (values < low_bound).mean(0))
        np.testing.assert_array_equal(per_unit[name]["high"], (values > 0.95).mean(0))
        np.testing.assert_allclose(
            per_unit[name]["saturated"], ((values < low_bound) | (values > 0.95)).mean(0)
        )
        assert 0 < per_unit[name]["saturated"].mean() < 1  # the draw does saturate


def test_merge_and_summary_match_gate_summary(rng):
    gates = random_gates(rng, 2, 120, 5)
    first = GateStats.from_gates({k: v[:, :50] for k, v in gates.items()})
    second = GateStats.from_gates({k: v[:, 50:] for k, v in gates.items()})
    merged = first.merge(second).summary()
    whole = gate_summary(gates)
    assert set(merged) == set(whole)
    for name in whole:
        assert set(merged[name]) == set(whole[name])
        for key, value in whole[name].items():
            assert np.isclose(merged[name][key], value, rtol=1e-9, atol=1e-12), (name, key)


def test_float16_chunks_and_bad_input(rng):
    gates = random_gates(rng, 1, 30, 4)
    half = {k: v.astype(np.float16) for k, v in gates.items()}
    stats = GateStats.from_gates(half)
    expected = half["update"].astype(np.float64).reshape(-1, 4).mean(0)
    np.testing.assert_allclose(stats.per_unit()["update"]["mean"], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="units"):
        stats.update({k: v[..., :3] for k, v in gates.items()})
    with pytest.raises(ValueError, match="saturation"):
        GateStats(saturation=0.7)
    with pytest.raises(ValueError, match="no gates"):
        GateStats().summary()
