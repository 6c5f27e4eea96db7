"""The CUDA build on a machine without a GPU: every kernel compiles for sm_75, sm_80 and
sm_90 without register spills (ptxas -v), the op library registers GPU kernels, and the
numpy module's CUDA entry points validate their arguments and report a missing GPU plainly.

Without nvcc these tests skip, unless GATEGRU_REQUIRE_CUDA=1 makes a missing CUDA build a
failure (CI machines that have nvcc should set it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc" / "core").glob("*.cu"))
ARCHS = ("75", "80", "90")
# The kernels that run once per step or hold the whole sequence: no spills allowed.
HOT = re.compile(r"(forward|backward)_(persistent|step)")
REQUIRE = os.environ.get("GATEGRU_REQUIRE_CUDA") == "1"


def skip_or_fail(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (GATEGRU_REQUIRE_CUDA=1)")
    pytest.skip(reason)


def find_nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None and Path("/usr/local/cuda/bin/nvcc").exists():
        nvcc = "/usr/local/cuda/bin/nvcc"
    if nvcc is None:
        skip_or_fail("nvcc not found: the CUDA kernels cannot be compiled here")
    return nvcc


def parse_ptxas(text: str) -> dict[tuple[str, str], dict[str, int]]:
    """{(mangled kernel, arch): {registers, stack, spill_stores, spill_loads}} from -v output."""
    kernels: dict[tuple[str, str], dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line):
            current = kernels.setdefault((m[1], m[2]), {})
        elif current is not None and (
            m := re.search(
                r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line
            )
        ):
            current.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current["registers"] = int(m[1])
    return kernels


@pytest.fixture(scope="module")
def ptxas_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """ptxas -v output per (source, arch), all compiled in parallel (about 20 s on 2 cores)."""
    nvcc = find_nvcc()
    out = tmp_path_factory.mktemp("ptxas")

    def compile_one(job: tuple[Path, str]) -> tuple[tuple[str, str], str]:
        src, arch = job
        cmd = [
            nvcc,
            "-std=c++17",
            f"-arch=sm_{arch}",
            "-Xptxas=-v",
            "-I",
            str(ROOT / "csrc"),
            "-c",
            str(src),
            "-o",
            str(out / f"{src.stem}.sm_{arch}.o"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
        return (src.name, arch), done.stdout + done.stderr

    jobs = [(src, arch) for src in SOURCES for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(pool.map(compile_one, jobs))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", [s.name for s in SOURCES])
def test_kernels_do_not_spill(ptxas_reports, source, arch):
    kernels = parse_ptxas(ptxas_reports[(source, arch)])
    hot = {name: k for (name, a), k in kernels.items() if a == arch and HOT.search(name)}
    if source.startswith("gru_"):
        assert hot, f"no forward/backward kernel found in the ptxas report of {source}"
    for name, k in hot.items():
        assert k.get("spill_stores") == 0 and k.get("spill_loads") == 0, (
            f"{name} spills on sm_{arch}: {k}"
        )
        assert k.get("stack") == 0, f"{name} uses a stack frame (local memory) on sm_{arch}: {k}"


def test_op_library_registers_gpu_kernels():
    tf = pytest.importorskip("tensorflow")
    from gategru import _build_info

    if not _build_info.WITH_CUDA:
        skip_or_fail("gategru was built without CUDA")
    from tensorflow.python.framework import kernels

    from gategru.ops import load_library

    load_library()
    for op in ("GateGruForward", "GateGruBackward"):
        registered = kernels.get_registered_kernels_for_op(op).kernel
        devices = {k.device_type for k in registered}
        assert {"CPU", "GPU"} <= devices, f"{op} kernels: {devices}"
        gpu_types = {
            t
            for k in registered
            if k.device_type == "GPU"
            for c in k.constraint
            for t in c.allowed_values.list.type
        }
        wanted = {tf.float16, tf.bfloat16, tf.float32, tf.float64}
        assert gpu_types == {d.as_datatype_enum for d in wanted}, f"{op} GPU kernels: {gpu_types}"


class FakeDeviceArray:
    """Only an interface dict: enough to reach validation, which runs before any CUDA call."""

    def __init__(self, shape: tuple[int, ...], typestr: str = "<f4", ptr: int = 0x1000):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, False),
            "strides": None,
            "version": 3,
        }


def cuda_module():
    from gategru import _kernels

    if not hasattr(_kernels, "forward_cuda"):
        skip_or_fail("the numpy module was built without CUDA")
    return _kernels


def test_cuda_available_says_why():
    from gategru import _kernels

    available, message = _kernels.cuda_available()
    assert isinstance(available, bool) and isinstance(message, str) and message
    if not available and getattr(_kernels, "forward_cuda", None) is not None:
        # built with CUDA but no usable driver here: the reason, and the error code, are named
        assert "driver" in message and "code" in message, message


def test_backward_cuda_validates_with_the_ops_rules():
    """backward_cuda checks shapes with the op's check_backward_op, before any CUDA call,
    and takes the op's absent shapes for "none"."""
    k = cuda_module()
    b, t, h = 3, 4, 5
    seq = (b, t, h)
    ok = dict(h0=FakeDeviceArray((b, h)), recurrent_kernel=FakeDeviceArray((h, 3 * h)),
              h_seq=FakeDeviceArray(seq), update=FakeDeviceArray(seq),
              reset=FakeDeviceArray(seq), candidate=FakeDeviceArray(seq),
              d_h_seq=FakeDeviceArray(seq), d_xw=FakeDeviceArray((b, t, 3 * h)),
              d_h0=FakeDeviceArray((b, h)), hu_candidate=FakeDeviceArray(seq))
    cases = [
        ({"h0": FakeDeviceArray((b, h + 1))}, ValueError, r"`h0` must have shape \(3, 5\)"),
        ({"d_h_last": FakeDeviceArray((b, h + 1))}, ValueError, "`d_h_last` must have shape"),
        ({"d_update": FakeDeviceArray((b, t, h + 1))}, ValueError, "`d_update` must have"),
        ({"mask": FakeDeviceArray((b, t + 1), "|b1")}, ValueError, r"`mask` must have shape"),
        ({"hu_candidate": None}, ValueError, "`hu_candidate` is required"),
        ({"d_xw": FakeDeviceArray((b, t, 3 * h + 1))}, ValueError, "`d_xw` must have shape"),
        ({"h_seq": FakeDeviceArray(seq, "<f8")}, TypeError, "dtype"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            k.backward_cuda(**{**ok, **change})
    # Valid and absent-as-none inputs pass validation; only then does the device answer:
    # without one, a RuntimeError naming CUDA; with one, the fake pointers are refused.
    for change in ({}, {"d_update": FakeDeviceArray((0, 0, 0))},
                   {"mask": FakeDeviceArray((0,), "|b1")}):
        with pytest.raises((RuntimeError, ValueError), match="cuda|not in device memory"):
            k.backward_cuda(**{**ok, **change})


def test_forward_cuda_validates_before_touching_the_device():
    k = cuda_module()
    b, t, h = 3, 4, 5
    ok = dict(
        xw=FakeDeviceArray((b, t, 3 * h)),
        h0=FakeDeviceArray((b, h)),
        recurrent_kernel=FakeDeviceArray((h, 3 * h)),
        recurrent_bias=FakeDeviceArray((3 * h,)),
        h_seq=FakeDeviceArray((b, t, h)),
        h_last=FakeDeviceArray((b, h)),
    )
    with pytest.raises(ValueError, match="h_last"):
        k.forward_cuda(**{**ok, "h_last": FakeDeviceArray((b, h + 1))})
    with pytest.raises(TypeError, match="dtype"):
        k.forward_cuda(**{**ok, "h0": FakeDeviceArray((b, h), "<f8")})
    with pytest.raises(TypeError, match="__cuda_array_interface__"):
        k.forward_cuda(**{**ok, "xw": [[0.0]]})
    with pytest.raises(ValueError, match="path"):
        k.forward_cuda(**ok, path="fastest")
    # the projecting form and the 16-bit types are checked the same way
    x = FakeDeviceArray((b, t, 7))
    with pytest.raises(ValueError, match=r"`kernel` must have shape.*got \(7, 14\)"):
        k.forward_cuda(**{**ok, "xw": x}, kernel=FakeDeviceArray((7, 14)),
                       input_bias=FakeDeviceArray((15,)))
    with pytest.raises(ValueError, match="`input_bias` is required with `kernel`"):
        k.forward_cuda(**{**ok, "xw": x}, kernel=FakeDeviceArray((7, 15)))
    with pytest.raises(TypeError, match=r"dtype='bfloat16' takes int16 views.*<f4"):
        k.forward_cuda(**ok, dtype="bfloat16")
    with pytest.raises(ValueError, match="`dtype` must be None or 'bfloat16'"):
        k.forward_cuda(**ok, dtype="float8")
    shape = {name: a.__cuda_array_interface__["shape"] for name, a in ok.items()}
    half = {name: FakeDeviceArray(s, "<f2") for name, s in shape.items()}
    with pytest.raises(TypeError, match=r"`h0` has dtype <f4, expected <f2"):
        k.forward_cuda(**{**half, "h0": ok["h0"]})
    bf16 = {name: FakeDeviceArray(s, "<i2") for name, s in shape.items()}
    with pytest.raises(ValueError, match="h_last"):
        k.forward_cuda(**{**bf16, "h_last": FakeDeviceArray((b, h + 1), "<i2")},
                       dtype="bfloat16")
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        k.forward_cuda(**bf16)  # int16 without dtype="bfloat16"
    # As for the op, a (0,) mask means none: validation passes, the device answers.
    with pytest.raises((RuntimeError, ValueError), match="cuda|not in device memory"):
        k.forward_cuda(**ok, mask=FakeDeviceArray((0,), "|b1"))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(3, 4\)"):
        k.forward_cuda(**ok, mask=FakeDeviceArray((3, 5), "|b1"))
    with pytest.raises(ValueError, match="hu_candidate"):
        k.backward_cuda(
            h0=ok["h0"],
            recurrent_kernel=ok["recurrent_kernel"],
            h_seq=ok["h_seq"],
            update=ok["h_seq"],
            reset=ok["h_seq"],
            candidate=ok["h_seq"],
            d_h_seq=ok["h_seq"],
            d_xw=FakeDeviceArray((b, t, 3 * h)),
            d_h0=ok["h0"],
        )
    available, message = k.cuda_available()
    if not available:  # valid arguments: the first CUDA call reports the missing GPU
        for args, extra in ((ok, {}), (half, {}), (bf16, {"dtype": "bfloat16"})):
            with pytest.raises((RuntimeError, ValueError)):
                k.forward_cuda(**args, **extra)


def test_launch_override_rejects_negative_sizes():
    """The tuning hook names its arguments; 0 (the heuristic) and positive sizes pass."""
    k = cuda_module()
    for args in ((-1, 0), (0, -2)):
        with pytest.raises(ValueError, match="`slice_width` and `blocks_y` must be >= 0"):
            k.cuda_set_launch_override(*args)
    k.cuda_set_launch_override(4, 2)
    k.cuda_set_launch_override()  # back to the heuristic for the rest of the process
