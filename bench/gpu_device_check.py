"""GPU device check: build gategru's CUDA kernels, check them, time them against cuDNN.

For a machine with an NVIDIA GPU, PyTorch (with cuDNN), CMake and pybind11, and no
TensorFlow. From the repository root:

    python bench/gpu_device_check.py              # the full check, about 3 minutes on an H200
    python bench/gpu_device_check.py --quick      # a small timing grid
    python bench/gpu_device_check.py --sweep 60   # plus the launch-shape sweep (a new GPU)

1. Builds the native module with CMake (TensorFlow off, CUDA on, the GPU's architecture,
   Release, ninja when available) into a temporary directory.
2. Correctness, on fresh random inputs with every output poisoned (NaN) before each run:
   against torch.nn.GRU (cuDNN) with converted weights, forward and backward (the weight
   gradients formed with matmuls as gategru/ops.py does); the gates against the float64
   oracle gategru/reference.py; the backward, masks, reset_after=False and gate gradients
   against a float64 PyTorch autograd of the same recurrence. Both launch paths.
3. Timing with CUDA events (warm-up, median), ours against torch.nn.GRU, forward with and
   without gates, and forward+backward, over B in {1,16,64,256}, H in {128,256,512,1024},
   T=1000, in fp32, fp16 and bf16 (ours keeps 16-bit tensors in memory and computes in
   float).
4. With --sweep: the persistent kernel's launch shapes (units per block × batch chunks,
   forced through cuda_set_launch_override) against each other, the data behind
   cuda_launch_heuristics.h's persistent_* rules.
5. Where compute-sanitizer is on the PATH, small cases of every path under its memcheck;
   an error there makes "correct" false.
6. Writes gpu-<date>.json (top-level "correct", the device, every timing) and gpu-<date>.md
   to $OUT, or to bench/results/ when $OUT is unset.

Each stage runs in a child process with a timeout, so a hung or crashed kernel still
leaves a report; a global time guard stops the timing grid early.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_check_common import ROOT, Recorder, load_module, load_reference, log
from gpu_check_timing import run_sweep, run_timing
from gpu_check_torch import (
    Ours,
    keras_from_torch,
    max_err,
    oracle_torch,
    random_mask,
    torch_grads_as_keras,
    weight_grads,
)

BUDGET_S = 450  # of the 8 minutes the device call allows, leaving time to write results
MEMCHECK_S = 40  # kept back from the timing grid for the memcheck stage


# ---------------------------------------------------------------------------------------
# Build (parent process)


def cuda_arch() -> str:
    if os.environ.get("GATEGRU_CUDA_ARCH"):
        return os.environ["GATEGRU_CUDA_ARCH"]
    try:
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        return f"{major}{minor}"
    except Exception:  # noqa: BLE001 - no torch/GPU: build for the H200 anyway
        return "90"


def build(build_dir: Path, log_path: Path) -> tuple[bool, str, float]:
    """Configures and builds the module; returns (ok, path of _kernels*.so, seconds)."""
    start = time.time()
    cmd = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGATEGRU_BUILD_TF=OFF",
        "-DGATEGRU_CUDA=ON",
        f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch()}",
        f"-DPython_EXECUTABLE={sys.executable}",
    ]
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    jobs = str(os.cpu_count() or 4)
    with open(log_path, "w") as out:
        for step in (cmd, ["cmake", "--build", str(build_dir), "-j", jobs]):
            out.write("$ " + " ".join(step) + "\n")
            out.flush()
            done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                return False, "", time.time() - start
    found = glob.glob(str(build_dir / "_kernels*.so"))
    return bool(found), found[0] if found else "", time.time() - start


# ---------------------------------------------------------------------------------------
# Child processes: correctness and timing. Each appends one JSON object per line.


def run_correctness(kernels, ours, record: Recorder, device: str = "cuda") -> None:
    """`ours` runs the op (Ours: the CUDA entry points); `device` holds every tensor."""
    import numpy as np
    import torch

    ref = load_reference()
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.backends.cudnn.allow_tf32 = False  # compare plain fp32 with plain fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = torch.Generator().manual_seed(int(time.time()))
    record(kind="info", cuda_available=kernels.cuda_available()[1])

    def check(name, got, want, tol, relative=False, **ctx):
        err, scale = max_err(torch, got, want)
        bound = tol * max(scale, 1.0) if relative else tol
        ok = err <= bound
        record(kind="check", name=name, ok=ok, max_abs_err=err, bound=bound, **ctx)
        if not ok:
            log(f"FAIL {name} {ctx}: err {err:.3e} > {bound:.3e}")
        return ok

    def randn(*shape, dtype=torch.float32, scale=1.0):
        return (torch.randn(*shape, generator=rng) * scale).to(dtype=dtype, device=dev)

    def guarded(ctx, fn):
        """Runs one case; an exception fails it (a sticky CUDA error ends the stage)."""
        try:
            fn()
            sync()
        except Exception as err:  # noqa: BLE001
            record(
                kind="check",
                name="exception",
                ok=False,
                error=f"{type(err).__name__}: {err}"[:400],
                **ctx,
            )
            log(f"FAIL {ctx}: {type(err).__name__}: {str(err)[:200]}")
            if any(s in str(err) for s in ("illegal", "launch failure", "unspecified")):
                raise

    # (a) against cuDNN, fp32, reset_after=True, converted weights.
    def vs_cudnn(bsz, t, i, h, path, ctx):
        gru = torch.nn.GRU(i, h, batch_first=True).to(dev)
        x = randn(bsz, t, i).requires_grad_()
        h0 = randn(bsz, h, scale=0.5).requires_grad_()
        out, hn = gru(x, h0[None])
        g_seq, g_last = randn(bsz, t, h), randn(bsz, h)
        torch.autograd.backward([out, hn[0]], [g_seq, g_last])
        kernel, u, b_in, b_rec = keras_from_torch(torch, gru)
        xw = (x.detach().reshape(-1, i) @ kernel + b_in).reshape(bsz, t, 3 * h)
        fwd = ours.forward(xw, h0.detach(), u, b_rec, path=path, poison=True)
        check("h_seq", fwd["h_seq"], out.detach(), 5e-4, **ctx)
        check("h_last", fwd["h_last"], hn[0].detach(), 5e-4, **ctx)
        # the op's projecting form (x, kernel, b_in: the projection kernel, then the same)
        proj = ours.forward(x.detach(), h0.detach(), u, b_rec, path=path, poison=True,
                            kernel=kernel.contiguous(), input_bias=b_in.contiguous())
        check("h_seq(x, kernel)", proj["h_seq"], out.detach(), 5e-4, **ctx)
        check("update(x, kernel)", proj["update"], fwd["update"], 1e-5, **ctx)
        d_xw, d_h0 = ours.backward(fwd, h0.detach(), u, g_seq, g_last, path=path, poison=True)
        d_x, d_kernel, d_b_in, d_u, d_b_rec = weight_grads(
            torch, x.detach(), kernel, d_xw, fwd, h0.detach(), None, True
        )
        t_kernel, t_u, t_b_in, t_b_rec = torch_grads_as_keras(torch, gru)
        for name, got, want in (
            ("d_x", d_x, x.grad),
            ("d_h0", d_h0, h0.grad),
            ("d_kernel", d_kernel, t_kernel),
            ("d_recurrent_kernel", d_u, t_u),
            ("d_bias_in", d_b_in, t_b_in),
            ("d_bias_rec", d_b_rec, t_b_rec),
        ):
            check(name, got, want, 2e-3, relative=True, **ctx)

    for bsz, t, i, h, path in (
        (5, 37, 13, 59, "persistent"),
        (5, 37, 13, 59, "step"),
        (64, 50, 96, 1024, "persistent"),
        (64, 50, 96, 1024, "step"),
        (3, 20, 7, 130, "auto"),
    ):
        ctx = dict(test="vs_cudnn", B=bsz, T=t, I=i, H=h, path=path)
        guarded(ctx, lambda: vs_cudnn(bsz, t, i, h, path, ctx))  # noqa: B023

    # (b) everything else against float64: gates (reference.py), backward with masks,
    # reset_after=False and gate gradients (autograd of the same recurrence).
    def vs_float64(dtype, reset_after, mask, path, bsz, t, h, ctx):
        xw64 = randn(bsz, t, 3 * h, dtype=torch.float64)
        h064 = randn(bsz, h, dtype=torch.float64, scale=0.5)
        u64 = randn(h, 3 * h, dtype=torch.float64, scale=h**-0.5)
        b64 = randn(3 * h, dtype=torch.float64, scale=0.3)
        args = [a.to(dtype) for a in (xw64, h064, u64, b64)]
        fwd = ours.forward(*args, mask=mask, reset_after=reset_after, path=path, poison=True)
        want = ref.gru_sequence_reference(
            *(a.cpu().numpy() for a in (xw64, h064, u64, b64)),
            mask=None if mask is None else mask.cpu().numpy(),
            reset_after=reset_after,
        )
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        for name in ("h_seq", "h_last", "update", "reset", "candidate"):
            check(name, fwd[name], torch.from_numpy(np.asarray(getattr(want, name))), tol, **ctx)
        nogates = ours.forward(
            *args, mask=mask, reset_after=reset_after, path=path, gates=False, poison=True
        )
        check("h_seq(no gates)", nogates["h_seq"], fwd["h_seq"], 0.0, **ctx)
        # backward, with gradients on every output including the gates
        leaves = [a.clone().requires_grad_() for a in (xw64, h064, u64, b64)]
        outs = oracle_torch(torch, *leaves, mask, reset_after)
        grads = [randn(*o.shape, dtype=torch.float64) for o in outs]
        torch.autograd.backward(list(outs), grads)
        g = [gr.to(dtype) for gr in grads]
        d_xw, d_h0 = ours.backward(
            fwd,
            args[1],
            args[2],
            g[0],
            g[1],
            tuple(g[2:]),
            mask=mask,
            reset_after=reset_after,
            path=path,
            poison=True,
        )
        btol = 1e-9 if dtype == torch.float64 else 1e-4
        check("d_xw", d_xw, leaves[0].grad, btol, relative=True, **ctx)
        check("d_h0", d_h0, leaves[1].grad, btol, relative=True, **ctx)
        no_x = torch.zeros(bsz, t, 1, dtype=dtype, device=dev)
        no_kernel = torch.zeros(1, 3 * h, dtype=dtype, device=dev)
        _, _, _, d_u, d_b = weight_grads(
            torch, no_x, no_kernel, d_xw, fwd, args[1], mask, reset_after
        )
        check("d_recurrent_kernel", d_u, leaves[2].grad, btol, relative=True, **ctx)
        check("d_recurrent_bias", d_b, leaves[3].grad, btol, relative=True, **ctx)

    for dtype in (torch.float64, torch.float32):
        for reset_after in (True, False):
            for masked in (False, True):
                for path in ("persistent", "step"):
                    bsz, t, h = 6, 23, 37
                    mask = random_mask(torch, rng, bsz, t, dev) if masked else None
                    ctx = dict(
                        test="vs_float64",
                        dtype=str(dtype).split(".")[-1],
                        reset_after=reset_after,
                        masked=masked,
                        path=path,
                        B=bsz,
                        T=t,
                        H=h,
                    )
                    guarded(ctx, lambda: vs_float64(dtype, reset_after, mask, path, bsz, t, h, ctx))  # noqa: B023
    # (c) 16-bit storage (float compute) against float64 on the same rounded inputs.
    def vs_float64_16(dtype, reset_after, path, bsz, t, h, ctx):
        args64 = [
            randn(*shape, dtype=torch.float64, scale=sc).to(dtype).to(torch.float64)
            for shape, sc in (((bsz, t, 3 * h), 1.0), ((bsz, h), 0.5), ((h, 3 * h), h**-0.5),
                              ((3 * h,), 0.3))
        ]
        fwd = ours.forward(*(a.to(dtype) for a in args64), reset_after=reset_after, path=path,
                           poison=True)
        want = ref.gru_sequence_reference(*(a.cpu().numpy() for a in args64),
                                          reset_after=reset_after)
        tol = 1e-2 if dtype == torch.float16 else 6e-2
        for name in ("h_seq", "h_last", "update", "reset", "candidate"):
            got = fwd[name].to(torch.float64)
            check(name, got, torch.from_numpy(np.asarray(getattr(want, name))), tol, **ctx)
        leaves = [a.clone().requires_grad_() for a in args64]
        outs = oracle_torch(torch, *leaves, None, reset_after)
        g = randn(*outs[0].shape, dtype=torch.float64).to(dtype)
        torch.autograd.backward([outs[0]], [g.to(torch.float64)])
        d_xw, d_h0 = ours.backward(fwd, args64[1].to(dtype), args64[2].to(dtype), g,
                                   reset_after=reset_after, path=path, poison=True)
        check("d_xw", d_xw.to(torch.float64), leaves[0].grad, 4 * tol, relative=True, **ctx)
        check("d_h0", d_h0.to(torch.float64), leaves[1].grad, 4 * tol, relative=True, **ctx)

    for dtype in (torch.float16, torch.bfloat16):
        for reset_after in (True, False):
            for path in ("persistent", "step"):
                bsz, t, h = 6, 23, 37
                ctx = dict(test="vs_float64_16bit", dtype=str(dtype).split(".")[-1],
                           reset_after=reset_after, path=path, B=bsz, T=t, H=h)
                guarded(ctx, lambda: vs_float64_16(dtype, reset_after, path, bsz, t, h, ctx))  # noqa: B023
    sync()
    if dev.type == "cuda":
        for h in (128, 1024, 1100):
            fwd_plan = kernels.cuda_launch_plan(64, h, "float32")
            bwd_plan = kernels.cuda_launch_plan(64, h, "float32", backward=True)
            record(kind="plan", H=h, B=64, forward=fwd_plan, backward=bwd_plan)
    record(kind="done")


def run_memcheck(ours, record, device: str = "cuda") -> None:
    """Small cases on every launch path, meant to run under compute-sanitizer's memcheck:
    an out-of-bounds or misaligned access in any kernel fails the stage's exit code."""
    import torch

    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(int(time.time()))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bsz, t, h = 5, 9, 45  # odd sizes: partial tiles everywhere
    for dtype in (torch.float32, torch.float16):
        for reset_after in (True, False):
            for masked in (False, True):
                for path in ("persistent", "step"):
                    def randn(*shape, scale=1.0, dtype=dtype):
                        return (torch.randn(*shape, device=dev, generator=gen) * scale).to(dtype)

                    mask = (torch.rand(bsz, t, device=dev, generator=gen) > 0.3) if masked else None
                    xw, h0 = randn(bsz, t, 3 * h), randn(bsz, h, scale=0.5)
                    u, b = randn(h, 3 * h, scale=h**-0.5), randn(3 * h, scale=0.3)
                    fwd = ours.forward(xw, h0, u, b, mask=mask, reset_after=reset_after, path=path)
                    gates = tuple(randn(bsz, t, h) for _ in range(3))
                    ours.backward(fwd, h0, u, randn(bsz, t, h), randn(bsz, h), gates, mask=mask,
                                  reset_after=reset_after, path=path)
                    sync()
                    record(kind="memcheck_case", dtype=str(dtype), reset_after=reset_after,
                           masked=masked, path=path)
    record(kind="done")


# ---------------------------------------------------------------------------------------
# Parent: stages, time guard, report


def run_child(
    stage: str, kernels_path: str, lines: Path, timeout: float, extra=(), prefix=(), log_to=None
) -> str:
    cmd = [
        *prefix,
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--kernels",
        kernels_path,
        "--lines",
        str(lines),
        *extra,
    ]
    try:
        with open(log_to, "w") if log_to else contextlib.nullcontext() as sink:
            output = {"stdout": sink, "stderr": subprocess.STDOUT} if log_to else {}
            done = subprocess.run(cmd, timeout=max(timeout, 5), check=False, **output)
        return "ok" if done.returncode == 0 else f"exit code {done.returncode}"
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def markdown(report: dict) -> str:
    rows = {}
    for r in report["timings"]:
        key = (r["dtype"], r["H"], r["B"])
        rows.setdefault(key, {"path": r.get("path", "")})
        if "case" in r:
            rows[key][r["case"]] = r.get("ms", r.get("error", r.get("skipped", "")))

    def cell(v):
        return f"{v:.2f}" if isinstance(v, (int, float)) else ("–" if not v else str(v)[:30])

    def ratio(a, b):
        return (
            f"{a / b:.2f}"
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
            else "–"
        )

    out = [
        f"# gategru GPU check, {report['date']}",
        "",
        f"Device: {report['device']}; torch {report['torch']}, cuDNN {report['cudnn']}; "
        f"correct: **{report['correct']}**; T={report.get('T', 1000)}, I=H. Times in ms "
        "(CUDA events, median). ours = input projection (torch.addmm) + our fused op. "
        "fp16/bf16: ours keeps 16-bit tensors in memory and computes in float32. cuDNN fp32 runs "
        f"with PyTorch's TF32 default (allow_tf32={report.get('tf32_cudnn')}); the 'no TF32' "
        "column turns it off.",
        "",
        "| dtype | H | B | path | cuDNN fwd | cuDNN fwd (no TF32) | ours fwd+gates | ours fwd | "
        "gates/cuDNN | cuDNN fwd+bwd | ours fwd+bwd | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (dtype, h, b), v in sorted(
        rows.items(), key=lambda kv: (["fp32", "fp16", "bf16"].index(kv[0][0]), kv[0][1], kv[0][2])
    ):
        fwd_ratio = ratio(v.get("ours_fwd_gates"), v.get("cudnn_fwd"))
        bwd_ratio = ratio(v.get("ours_fwd_bwd"), v.get("cudnn_fwd_bwd"))
        out.append(
            f"| {dtype} | {h} | {b} | {v['path']} | {cell(v.get('cudnn_fwd'))} | "
            f"{cell(v.get('cudnn_fwd_no_tf32'))} | {cell(v.get('ours_fwd_gates'))} | "
            f"{cell(v.get('ours_fwd_nogates'))} | {fwd_ratio} | "
            f"{cell(v.get('cudnn_fwd_bwd'))} | {cell(v.get('ours_fwd_bwd'))} | {bwd_ratio} |"
        )
    if report.get("sweep"):
        out += [
            "",
            f"Launch-shape sweep (fp32, gates on, T={report['sweep'][0].get('T')}, I=H; "
            "blocks = unit slices × batch chunks; ms):",
            "",
            "| H | B | blocks | forward | backward | |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["sweep"]:
            if "plan" not in r:
                continue
            plan = r["plan"]
            out.append(
                f"| {r['H']} | {r['B']} | {plan['blocks_x']}×{plan['blocks_y']}"
                f"{'' if plan['persistent'] else ' (step)'} | {cell(r['fwd']['ms'])} | "
                f"{cell(r['bwd']['ms']) if 'bwd' in r else '–'} | "
                f"{'default' if r['default'] else ''} |"
            )
    failed = [c for c in report["checks"] if not c.get("ok")]
    out += ["", f"Correctness checks: {len(report['checks'])}, failed: {len(failed)}."]
    hidden = ("kind", "name", "ok")
    out += [
        f"- FAIL {c['name']} {json.dumps({k: v for k, v in c.items() if k not in hidden})}"
        for c in failed[:40]
    ]
    out += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def memcheck(sanitizer: str, kernels_path: str, work: Path, out_dir: Path, stamp: str,
             deadline: float) -> dict:
    """The memcheck stage under compute-sanitizer; ok when it finished with no error."""
    log("memcheck (compute-sanitizer)")
    lines = work / "memcheck.jsonl"
    log_path = out_dir / f"gpu-{stamp}-memcheck.log"
    status = run_child(
        "memcheck",
        kernels_path,
        lines,
        deadline - time.time(),
        prefix=(sanitizer, "--tool", "memcheck", "--error-exitcode", "99"),
        log_to=log_path,
    )
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    summary = [line for line in text.splitlines() if "ERROR SUMMARY" in line]
    complete = any(r["kind"] == "done" for r in read_lines(lines))
    ok = status == "ok" and complete
    if status == "exit code 99":  # the sanitizer found errors: a result, not a breakdown
        status = "ok"
    log(f"memcheck: {'clean' if ok else 'FAILED'} ({status}; {summary[-1:] or 'no summary'})")
    return {"status": status, "ok": ok, "complete": complete, "summary": summary[-1:],
            "log": log_path.name}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small timing grid")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for everything")
    parser.add_argument(
        "--sweep",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the timing grid, this many seconds of the persistent kernel's launch-shape "
        "sweep (cuda_set_launch_override); taken from the budget",
    )
    parser.add_argument(
        "--stage", choices=("correctness", "timing", "memcheck", "sweep"), help=argparse.SUPPRESS
    )
    parser.add_argument("--kernels", help=argparse.SUPPRESS)
    parser.add_argument("--lines", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage == "correctness":
        import torch

        kernels = load_module(args.kernels)
        run_correctness(kernels, Ours(kernels, torch), Recorder(args.lines))
        return 0
    if args.stage == "timing":
        run_timing(args.kernels, Recorder(args.lines), args.deadline, args.quick)
        return 0
    if args.stage == "sweep":
        run_sweep(args.kernels, Recorder(args.lines), args.deadline)
        return 0
    if args.stage == "memcheck":
        import torch

        run_memcheck(Ours(load_module(args.kernels), torch), Recorder(args.lines))
        return 0

    start = time.time()
    deadline = start + args.budget
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    work = Path(tempfile.mkdtemp(prefix="gategru-gpu-"))
    report = {
        "date": stamp,
        "correct": False,
        "device": "unknown",
        "torch": None,
        "cudnn": None,
        "T": 200 if args.quick else 1000,
        "notes": [],
        "checks": [],
        "timings": [],
        "plans": [],
    }
    try:
        import torch

        report.update(
            torch=torch.__version__,
            cudnn=torch.backends.cudnn.version(),
            device=torch.cuda.get_device_name(0),
            capability=torch.cuda.get_device_capability(0),
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    except Exception as err:  # noqa: BLE001
        report["notes"].append(f"torch/GPU unavailable: {err}")

    log(f"building into {work / 'build'} (CUDA arch {cuda_arch()})")
    build_log = out_dir / f"gpu-{stamp}-build.log"
    ok, kernels_path, seconds = build(work / "build", build_log)
    report["build"] = {"ok": ok, "seconds": round(seconds, 1), "log": build_log.name}
    log(f"build {'ok' if ok else 'FAILED'} in {seconds:.0f} s (log: {build_log})")
    if ok:
        log("correctness")
        lines = work / "correctness.jsonl"
        status = run_child(
            "correctness", kernels_path, lines, min(200, deadline - time.time() - 60)
        )
        got = read_lines(lines)
        report["checks"] = [r for r in got if r["kind"] == "check"]
        report["plans"] = [r for r in got if r["kind"] == "plan"]
        report["cuda_available"] = next(
            (r["cuda_available"] for r in got if r["kind"] == "info"), None
        )
        complete = any(r["kind"] == "done" for r in got)
        report["correct"] = (
            complete and bool(report["checks"]) and all(c["ok"] for c in report["checks"])
        )
        if status != "ok" or not complete:
            report["notes"].append(f"correctness stage: {status}, complete={complete}")
        log(
            f"correctness: {sum(c['ok'] for c in report['checks'])}/{len(report['checks'])} "
            f"checks passed ({status})"
        )
        sanitizer = shutil.which("compute-sanitizer")
        memcheck_s = MEMCHECK_S if sanitizer else 0
        log("timing")
        lines = work / "timing.jsonl"
        status = run_child(
            "timing",
            kernels_path,
            lines,
            deadline - time.time() - 10 - memcheck_s - args.sweep,
            ["--deadline", str(deadline - 20 - memcheck_s - args.sweep)]
            + (["--quick"] if args.quick else []),
        )
        got = read_lines(lines)
        report["timings"] = [r for r in got if r["kind"] == "timing"]
        report.update(
            {k: v for r in got if r["kind"] == "info" for k, v in r.items() if k != "kind"}
        )
        report["notes"] += [f"timing stopped: {r['error']}" for r in got if r["kind"] == "fatal"]
        if status != "ok":
            report["notes"].append(f"timing stage: {status}")
        if args.sweep > 0:
            log("launch-shape sweep")
            lines = work / "sweep.jsonl"
            sweep_end = deadline - memcheck_s
            status = run_child("sweep", kernels_path, lines, sweep_end - time.time() + 5,
                               ["--deadline", str(sweep_end - 5)])
            report["sweep"] = [r for r in read_lines(lines) if r["kind"] == "sweep"]
            if status != "ok":
                report["notes"].append(f"sweep stage: {status}")
        if sanitizer:
            report["memcheck"] = memcheck(sanitizer, kernels_path, work, out_dir, stamp, deadline)
            if report["memcheck"]["status"] == "ok":
                report["correct"] = report["correct"] and report["memcheck"]["ok"]
            else:
                report["notes"].append(f"memcheck inconclusive: {report['memcheck']['status']}")
        else:
            report["notes"].append("compute-sanitizer not found: no memcheck run")
    report["elapsed_s"] = round(time.time() - start, 1)
    json_path = out_dir / f"gpu-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=1))
    (out_dir / f"gpu-{stamp}.md").write_text(markdown(report))
    log(
        f"correct={report['correct']}; wrote {json_path} and {json_path.with_suffix('.md')} "
        f"in {report['elapsed_s']} s"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if report["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
