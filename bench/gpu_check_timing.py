"""gpu_device_check.py's timing stages: the grid against torch.nn.GRU (cuDNN) with CUDA
events, and the persistent kernel's launch-shape sweep."""

from __future__ import annotations

import statistics
import time

from gpu_check_common import Recorder, load_module, log
from gpu_check_torch import Ours, keras_from_torch, weight_grads


def cuda_time_ms(torch, fn, deadline: float) -> dict:
    """Median of CUDA-event timings after warm-up; fewer repeats for slow shapes."""
    torch.cuda.synchronize()
    start = time.time()
    fn()
    torch.cuda.synchronize()
    first = (time.time() - start) * 1e3
    warmup = 1 if first > 50 else 2
    repeats = int(min(15, max(3, 600 / max(first, 1e-3))))
    if time.time() + (warmup + repeats) * first / 1e3 > deadline:
        repeats = 1
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return {"ms": statistics.median(times), "repeats": repeats, "min_ms": min(times)}


def run_timing(kernels_path: str, record: Recorder, deadline: float, quick: bool) -> None:
    import torch

    kernels = load_module(kernels_path)
    ours = Ours(kernels, torch)
    dev = torch.device("cuda")
    record(
        kind="info",
        tf32_cudnn=torch.backends.cudnn.allow_tf32,
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
    )
    batches, units = ((1, 64), (128, 512)) if quick else ((1, 16, 64, 256), (128, 256, 512, 1024))
    t = 200 if quick else 1000
    dtypes = (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16))
    grid = [(label, dtype, h, bsz) for label, dtype in dtypes for h in units for bsz in batches]
    if not quick:  # H = 2048 needs more blocks than fit at once: the per-step kernels
        grid += [("fp32", torch.float32, 2048, bsz) for bsz in (1, 64)]
    for label, dtype, h, bsz in grid:
        base = dict(kind="timing", dtype=label, B=bsz, T=t, I=h, H=h)
        if time.time() > deadline:
            record(**base, skipped="time budget")
            continue
        try:
            plan_dtype = "float32" if label == "fp32" else "float16"
            plan = kernels.cuda_launch_plan(bsz, h, plan_dtype)
            base["path"] = "persistent" if plan["persistent"] else "step"
            time_one(torch, ours, dev, dtype, bsz, t, h, base, record, deadline)
        except Exception as err:  # noqa: BLE001 - record and go on
            record(**base, error=f"{type(err).__name__}: {err}"[:400])
            if "CUDA error" in str(err) or "cudaError" in str(err):
                record(kind="fatal", error=str(err)[:400])
                return
        finally:
            torch.cuda.empty_cache()
    record(kind="done")


def time_one(torch, ours, dev, dtype, bsz, t, h, base, record, deadline) -> None:
    gen = torch.Generator(device=dev).manual_seed(0)
    gru = torch.nn.GRU(h, h, batch_first=True).to(dev)
    kernel, u, b_in, b_rec = keras_from_torch(torch, gru)  # fp32 master weights
    x32 = torch.randn(bsz, t, h, device=dev, generator=gen)
    h0 = torch.zeros(bsz, h, device=dev)
    g_seq = torch.randn(bsz, t, h, device=dev, generator=gen)
    x = x32.to(dtype)
    gru_t = gru.to(dtype)
    # 16-bit: our 16-bit kernels (float compute), weights and projection in that dtype too
    kernel, u, b_in, b_rec, h0 = (a.to(dtype) for a in (kernel, u, b_in, b_rec, h0))
    g_seq = g_seq.to(dtype)

    def ours_forward(gates):
        xw = torch.addmm(b_in, x.reshape(-1, h), kernel).reshape(bsz, t, 3 * h)
        out = ours.forward(xw, h0, u, b_rec, gates=gates)
        return out, x, xw

    def ours_fwd(gates):
        out, _, _ = ours_forward(gates)
        return out["h_seq"]

    def ours_fwd_bwd():
        out, xin, _ = ours_forward(True)
        d_xw, d_h0 = ours.backward(out, h0, u, g_seq)
        return weight_grads(torch, xin, kernel, d_xw, out, h0, None, True), d_h0

    params = list(gru_t.parameters())
    h0_t = h0.to(dtype)[None]
    g_t = g_seq.to(dtype)

    def cudnn_fwd():
        with torch.no_grad():
            return gru_t(x, h0_t)

    xr = x.detach().requires_grad_()

    def cudnn_fwd_bwd():
        out, _ = gru_t(xr, h0_t)
        return torch.autograd.grad(out, [xr, *params], g_t)

    cases = [
        ("cudnn_fwd", cudnn_fwd),
        ("ours_fwd_gates", lambda: ours_fwd(True)),
        ("ours_fwd_nogates", lambda: ours_fwd(False)),
        ("cudnn_fwd_bwd", cudnn_fwd_bwd),
        ("ours_fwd_bwd", ours_fwd_bwd),
    ]
    if dtype == torch.float32:

        def cudnn_fwd_strict():
            before = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False
            try:
                return cudnn_fwd()
            finally:
                torch.backends.cudnn.allow_tf32 = before

        cases.insert(1, ("cudnn_fwd_no_tf32", cudnn_fwd_strict))
    for name, fn in cases:
        if time.time() > deadline:
            record(**base, case=name, skipped="time budget")
            continue
        try:
            result = cuda_time_ms(torch, fn, deadline)
            record(**base, case=name, **result)
            log(f"{base['dtype']} B={bsz:<4} H={h:<5} {name:<18} {result['ms']:9.3f} ms")
        except Exception as err:  # noqa: BLE001
            record(**base, case=name, error=f"{type(err).__name__}: {err}"[:400])
            log(f"{base['dtype']} B={bsz} H={h} {name}: {type(err).__name__}: {str(err)[:120]}")
            if "illegal" in str(err) or "launch failure" in str(err):
                raise


def run_sweep(kernels_path: str, record: Recorder, deadline: float) -> None:
    """The persistent kernel's launch shapes (units per block, batch chunks) against each
    other, fp32 forward with gates (and backward for two shapes each), T = 500: the data
    behind cuda_launch_heuristics.h's persistent_* rules."""
    import torch

    kernels = load_module(kernels_path)
    ours = Ours(kernels, torch)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    try:
        for h in (128, 256, 512, 1024):
            for bsz in (1, 16, 64, 256):
                if not sweep_shape(torch, kernels, ours, sms, h, bsz, record, deadline):
                    return
                torch.cuda.empty_cache()
    finally:
        kernels.cuda_set_launch_override(0, 0)
    record(kind="done")


def sweep_shape(torch, kernels, ours, sms, h, bsz, record, deadline, device="cuda", t=500) -> bool:
    """One (H, B) of run_sweep; False once the deadline has passed."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(1)
    xw = torch.randn(bsz, t, 3 * h, device=dev, generator=gen)
    h0 = torch.randn(bsz, h, device=dev, generator=gen) * 0.5
    u = torch.randn(h, 3 * h, device=dev, generator=gen) * h**-0.5
    b = torch.randn(3 * h, device=dev, generator=gen) * 0.3
    g = torch.randn(bsz, t, h, device=dev, generator=gen)
    fwd = ours.forward(xw, h0, u, b)
    kernels.cuda_set_launch_override(0, 0)
    default = kernels.cuda_launch_plan(bsz, h, "float32")
    seen = set()
    old_slice = max(1, min(8, -(-h // sms)))  # the rule before batch chunks
    for slice_width in sorted({8, old_slice}, reverse=True):
        ys, y = set(), 1
        while y <= max(1, sms // -(-h // slice_width)):
            ys.add(y)
            y *= 2
        if slice_width == 8:
            ys.add(default["blocks_y"])
        for y in sorted(ys):
            if time.time() > deadline:
                record(kind="sweep", skipped="time budget", H=h, B=bsz)
                return False
            kernels.cuda_set_launch_override(slice_width, y)
            plan = kernels.cuda_launch_plan(bsz, h, "float32")
            key = (plan["blocks_x"], plan["blocks_y"], plan["persistent"])
            if key in seen:
                continue
            seen.add(key)
            is_default = key[:2] == (default["blocks_x"], default["blocks_y"])
            row = dict(kind="sweep", H=h, B=bsz, T=t, plan=plan, default=is_default)
            row["fwd"] = cuda_time_ms(torch, lambda: ours.forward(xw, h0, u, b), deadline)
            if (y == 1 or is_default) and slice_width == 8:
                row["bwd"] = cuda_time_ms(torch, lambda: ours.backward(fwd, h0, u, g), deadline)
            record(**row)
            log(
                f"sweep H={h:<5} B={bsz:<4} blocks {plan['blocks_x']:>4}x{plan['blocks_y']:<3} "
                f"fwd {row['fwd']['ms']:8.3f} ms"
                + (f"  bwd {row['bwd']['ms']:8.3f} ms" if "bwd" in row else "")
                + ("  (default)" if is_default else "")
            )
    return True
