"""A CUDA driver older than the toolkit gategru was built with: the GPU entry points say so
and what to do, and the CPU path (numpy module, op, layer) keeps working.

No real old driver is needed: tests/fake_driver/libcuda_old.c is a libcuda.so.1 that reports
CUDA 12.4, and the real CUDA runtime linked into gategru fails its own version check on it
(cudaErrorInsufficientDriver), exactly the path a user with an old driver takes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cuda_build import skip_or_fail

STUB = Path(__file__).resolve().parent / "fake_driver" / "libcuda_old.c"

SCRIPT = """
    import numpy as np
    from gategru import _kernels

    available, message = _kernels.cuda_available()
    print("AVAILABLE:", available)
    print("MESSAGE:", message)

    class DeviceArray:
        def __init__(self, shape):
            self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4",
                                             "data": (0x1000, False), "strides": None,
                                             "version": 3}

    b, t, h = 3, 4, 5
    try:
        _kernels.forward_cuda(DeviceArray((b, t, 3 * h)), DeviceArray((b, h)),
                              DeviceArray((h, 3 * h)), DeviceArray((3 * h,)),
                              DeviceArray((b, t, h)), DeviceArray((b, h)))
        print("LAUNCH: no error")
    except RuntimeError as err:
        print("LAUNCH:", err)

    # the CPU path: numpy module and the TF op through the layer, against the float64 oracle
    import tensorflow as tf
    import gategru
    from gategru.reference import gru_sequence_reference
    rng = np.random.default_rng()
    xw, h0 = rng.normal(size=(b, t, 3 * h)), rng.normal(size=(b, h))
    u, bias = rng.normal(size=(h, 3 * h)), rng.normal(size=3 * h)
    ref = gru_sequence_reference(xw, h0, u, bias)
    np.testing.assert_allclose(_kernels.forward(xw, h0, u, bias)["h_seq"], ref.h_seq,
                               atol=1e-12)
    x = rng.normal(size=(b, t, 2)).astype("float32")
    layer = gategru.GateGRU(h, return_sequences=True, return_gates=True)
    out, gates = layer(x)
    kernel, recurrent, b2 = (w.numpy().astype("float64") for w in layer.weights)
    ref = gru_sequence_reference(x.astype("float64") @ kernel + b2[0], np.zeros((b, h)),
                                 recurrent, b2[1])
    np.testing.assert_allclose(out.numpy(), ref.h_seq, atol=1e-5)
    np.testing.assert_allclose(gates["update"].numpy(), ref.update, atol=1e-5)
    print("CPU: ok on", [d.device_type for d in tf.config.list_logical_devices()])
"""


@pytest.fixture(scope="module")
def old_driver_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler to build the stand-in driver")
    out = tmp_path_factory.mktemp("old_driver")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out / "libcuda.so.1"), str(STUB)],
                   check=True)
    return out


# driver version -> what the message must say. 12.4 fails the runtime's version check; 13.0
# passes it, then lacks the entry points a real 13.0 driver has (cudaErrorCallRequiresNewerDriver).
CASES = {
    "12040": ("the NVIDIA driver is too old.", "The driver supports CUDA 12.4",
              "cudaErrorInsufficientDriver"),
    "13000": ("the NVIDIA driver is too old for a CUDA call", "The driver reports CUDA 13.0",
              "cudaErrorCallRequiresNewerDriver"),
}


@pytest.mark.parametrize("driver_version", sorted(CASES))
def test_old_driver_is_named_with_what_to_do(old_driver_dir, tmp_path, driver_version):
    from gategru import _kernels

    if not hasattr(_kernels, "forward_cuda"):
        skip_or_fail("the numpy module was built without CUDA")
    search_path = f"{old_driver_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    env = dict(os.environ, LD_LIBRARY_PATH=search_path, FAKE_CUDA_DRIVER_VERSION=driver_version,
               TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    headline, version_text, error_name = CASES[driver_version]
    assert lines["AVAILABLE"] == "False"
    assert lines["MESSAGE"].startswith(headline), lines["MESSAGE"]
    assert lines["LAUNCH"].startswith("cudaPointerGetAttributes(`xw`)"), lines["LAUNCH"]
    for message in (lines["MESSAGE"], lines["LAUNCH"]):
        assert version_text in message, message
        assert "update the driver" in message, message
        assert error_name in message, message
    if driver_version == "12040":  # an old driver, not a missing entry point
        assert "lacks an entry point" not in lines["MESSAGE"], lines["MESSAGE"]
    assert lines["CPU"].startswith("ok"), result.stdout
