"""Shared fixtures. Every test draws fresh random inputs; the seed is printed on failure so
a failing draw can be replayed with GATEGRU_TEST_SEED=<seed>."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    value = int(os.environ.get("GATEGRU_TEST_SEED", secrets.randbits(32)))
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("random seed", f"GATEGRU_TEST_SEED={value}"))


def random_mask(rng: np.random.Generator, batch: int, time: int, kind: str) -> np.ndarray | None:
    """None, right-padded rows (Keras's cuDNN case), or arbitrary holes, with one row fully
    masked and one row starting masked whenever the batch allows."""
    if kind == "none":
        return None
    if kind == "right_padded":
        lengths = rng.integers(1, time + 1, size=batch)
        mask = np.arange(time)[None, :] < lengths[:, None]
    else:
        mask = rng.random((batch, time)) > 0.35
        if batch > 1:
            mask[1] = False
        if batch > 2 and time > 1:
            mask[2, : max(1, time // 2)] = False
    return mask
