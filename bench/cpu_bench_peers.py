"""cpu_bench.py's peers outside TensorFlow: torch.nn.GRU, and oneDNN's lbr_gru_forward
through bench/onednn_gru.cc (built here, then run as a server that times on request)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from cpu_bench_timing import Bench, timed_loop

ROOT = Path(__file__).resolve().parents[1]
ONEDNN_ISA = {0x7: "avx2", 0xF: "avx2_vnni", 0x1F: "avx2_vnni_2", 0x27: "avx512_core",
              0x67: "avx512_core_vnni", 0xE7: "avx512_core_bf16", 0x1EF: "avx512_core_fp16",
              0xFEF: "avx512_core_amx", 0x1FEF: "avx512_core_amx_fp16"}


# ---- PyTorch ---------------------------------------------------------------------------------
def load_torch(wanted: set[str], threads: int) -> tuple[Any, str | None]:
    if "torch_gru" not in wanted:
        return None, "not selected"
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed (pip install -r requirements-bench.txt)"
    torch.set_num_threads(threads)
    # Only settable before torch's first parallel work.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    return torch, None


def _torch_order(a: np.ndarray) -> np.ndarray:
    # Keras blocks [z|r|h] -> PyTorch's [r|z|n] along the last axis.
    z, r, h = np.split(a, 3, axis=-1)
    return np.ascontiguousarray(np.concatenate([r, z, h], axis=-1))


def torch_benches(torch: Any, dims: tuple[int, int, int, int], x_np: np.ndarray,
                  weights: list[np.ndarray], modes: set[str]) -> list[Bench]:
    _, _, width, units = dims
    net = torch.nn.GRU(width, units, batch_first=True)
    kernel, recurrent, bias = weights
    with torch.no_grad():  # same weights as the Keras variants (torch's GRU is reset_after)
        net.weight_ih_l0.copy_(torch.from_numpy(_torch_order(kernel).T.copy()))
        net.weight_hh_l0.copy_(torch.from_numpy(_torch_order(recurrent).T.copy()))
        net.bias_ih_l0.copy_(torch.from_numpy(_torch_order(bias[0])))
        net.bias_hh_l0.copy_(torch.from_numpy(_torch_order(bias[1])))
    x = torch.from_numpy(x_np.copy())
    x_grad = x.clone().requires_grad_(True)

    def forward() -> Any:
        with torch.inference_mode():
            return net(x)[0]

    def train() -> Any:
        for p in (*net.parameters(), x_grad):
            p.grad = None
        out = net(x_grad)[0]
        out.sum().backward()
        return out

    def no_sync() -> None:
        pass  # PyTorch's CPU ops return when done

    benches = []
    if "forward" in modes:
        benches.append(Bench("torch_gru", "forward", timed_loop(forward, no_sync),
                             outputs=lambda: {"h": forward().numpy()}))
    if "train" in modes:
        benches.append(Bench("torch_gru", "train", timed_loop(train, no_sync)))
    return benches


# ---- oneDNN ----------------------------------------------------------------------------------
def onednn_package_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("onednn-devel-cpu-gomp")
    except metadata.PackageNotFoundError:
        return None


def build_onednn() -> tuple[Path | None, str]:
    """Compiles bench/onednn_gru.cc against the pip package's oneDNN, once per source and
    library (cached under build/bench). Returns (binary, None) or (None, why not)."""
    prefix = Path(sys.prefix)
    header = prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp"
    lib = prefix / "lib" / "libdnnl.so"
    if not header.exists() or not lib.exists():
        return None, ("onednn-devel-cpu-gomp is not installed in this environment "
                      "(pip install -r requirements-bench.txt)")
    gxx = shutil.which("g++")
    if gxx is None:
        return None, "g++ not found"
    src = ROOT / "bench" / "onednn_gru.cc"
    key = hashlib.sha1(src.read_bytes() + str(lib.resolve()).encode()).hexdigest()[:12]
    cache = ROOT / "build" / "bench"
    binary = cache / f"onednn_gru-{key}"
    if binary.exists():
        return binary, ""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="gategru-bench-"))
        binary = cache / binary.name
    tmp = binary.with_suffix(".tmp")
    cmd = [gxx, "-O2", "-std=c++17", "-fopenmp", f"-I{prefix / 'include'}", str(src),
           f"-L{lib.parent}", "-ldnnl", f"-Wl,-rpath,{lib.parent.resolve()}", "-o", str(tmp)]
    print(f"[bench] compiling {src.name} against oneDNN ({onednn_package_version()})",
          file=sys.stderr)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None, f"compiling {src.name} failed: {res.stderr.strip()[-800:]}"
    tmp.replace(binary)
    return binary, ""


class OneDnnServer:
    """bench/onednn_gru running at one shape; it answers 'run N' and 'dump PATH' on stdin."""

    def __init__(self, binary: Path, dims: tuple[int, ...], data: Path, max_isa: str | None,
                 threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if max_isa:
            env["ONEDNN_MAX_CPU_ISA"] = max_isa
        self.proc = subprocess.Popen(
            [str(binary), *map(str, dims), str(data)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.header = self._reply()
        self.header["isa_name"] = ONEDNN_ISA.get(self.header.get("isa", -1), "unknown")

    def _reply(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"onednn_gru exited ({self.proc.wait()}): {err.strip()[-500:]}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def run(self, repeats: int) -> list[float]:
        return [float(t) for t in self.ask(f"run {repeats}")["times_ms"]]

    def dump(self, shape: tuple[int, int, int]) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "h.f32"
            self.ask(f"dump {path}")
            return np.fromfile(path, np.float32).reshape(shape)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, RuntimeError, json.JSONDecodeError):
                self.ask("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def onednn_benches(binary: Path, dims: tuple[int, int, int, int], x_np: np.ndarray,
                   weights: list[np.ndarray], variants: list[str], tmp: Path, threads: int
                   ) -> tuple[list[Bench], list[OneDnnServer], dict[str, str]]:
    data = tmp / "onednn-{}x{}x{}x{}.f32".format(*dims)
    with open(data, "wb") as fh:
        for a in (x_np, *weights):
            fh.write(np.ascontiguousarray(a, np.float32).tobytes())
    benches, servers, failed = [], [], {}
    batch, steps, _, units = dims
    for variant in variants:
        try:
            server = OneDnnServer(binary, dims, data,
                                  "AVX2" if variant == "onednn_gru_avx2" else None, threads)
        except (RuntimeError, OSError, json.JSONDecodeError) as err:
            failed[variant] = str(err)
            continue
        servers.append(server)
        benches.append(Bench(variant, "forward", server.run,
                             outputs=lambda s=server: {"h": s.dump((batch, steps, units))},
                             memory={"peak_mb": server.header.get("peak_rss_delta_mb"),
                                     "rss_growth_mb": server.header.get("peak_rss_delta_mb")}))
    data.unlink()
    return benches, servers, failed
