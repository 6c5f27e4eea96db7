"""What cpu_bench.py measures: the shapes, the variants, the FLOP count behind the matmul
fractions, and the targets of issue #4 that a run is judged against. No TensorFlow here."""

from __future__ import annotations

from collections.abc import Callable

from paired_ratios import paired_ratio

SHAPES = {  # name: (batch, timesteps, input width, units)
    "S1": (1, 2000, 32, 128),
    "S2": (32, 500, 64, 256),
    "S3": (128, 200, 128, 512),
}
QUICK_SHAPES = {"Q1": (2, 30, 8, 16)}
VARIANTS = {  # name: (label, modes)
    "gategru_gates": ("GateGRU, gates on", ("forward", "train")),
    "gategru_nogates": ("GateGRU, gates off", ("forward", "train")),
    "keras_gru": ("keras.layers.GRU", ("forward", "train")),
    "keras_cell": ("Keras RNN, custom cell with gates", ("forward", "train")),
    "keras_recompute": ("keras GRU + recomputed gates", ("forward",)),
    "torch_gru": ("torch.nn.GRU", ("forward", "train")),
    "onednn_gru": ("oneDNN lbr_gru", ("forward",)),
    "onednn_gru_avx2": ("oneDNN lbr_gru, AVX2 cap", ("forward",)),
}
REFERENCE = "gategru_gates"
MEMORY_NOTE = (
    "peak growth during one call (after the timings): the larger of the process's peak RSS "
    "(large allocations unmapped on free) and TF's allocator peak bytes in use; oneDNN: its "
    "process's peak RSS over the user-layout inputs"
)
FLOPS_FORMULA = (
    "forward: 2*B*T*(I+H)*3H (the input and recurrent matmuls; gate arithmetic not counted); "
    "train: 3x forward (backward = two matmuls per forward matmul)"
)


def gru_flops(dims: tuple[int, int, int, int], mode: str) -> float:
    """FLOPS_FORMULA for one call at dims = (batch, steps, width, units)."""
    batch, steps, width, units = dims
    forward = 2.0 * batch * steps * (width + units) * 3 * units
    return forward * (3.0 if mode == "train" else 1.0)


def targets(by_round: dict, fractions: dict, shapes: dict, long: dict | None) -> list[dict]:
    """The targets' rows. Time ratios are paired by round (see cpu_bench.time_benches):
    their median decides, and their range over rounds shows how far the machine's drift
    moved them."""
    rows: list[dict] = []

    def add(shape: str, what: str, num: tuple, den: tuple, target: str,
            ok: Callable[[float], bool]) -> None:
        a, b = by_round.get((shape, *num)), by_round.get((shape, *den))
        paired = paired_ratio(a, b) if a and b else None
        value = paired["median"] if paired else None
        rows.append({"shape": shape, "target": what, "metric": f"{num[0]} {num[1]} ms / "
                     f"{den[0]} {den[1]} ms, median of per-round ratios", "goal": target,
                     "value": value, "range": [paired["min"], paired["max"]] if paired else None,
                     "met": None if value is None else bool(ok(value))})

    gates = (REFERENCE, "forward")
    canonical = [s for s, d in SHAPES.items() if shapes.get(s) == d]
    for s in canonical:
        for peer in ("onednn_gru", "torch_gru", "keras_gru", "onednn_gru_avx2"):
            if peer == "onednn_gru_avx2" and (s, peer, "forward") not in by_round:
                continue  # informational, and only where the CPU has more than AVX2
            add(s, f"gates on faster than {VARIANTS[peer][0]}", (peer, "forward"), gates,
                ">= 1", lambda v: v >= 1.0)
    if "S2" in canonical:
        add("S2", "gates on costs <= 10% over gates off", gates, ("gategru_nogates", "forward"),
            "<= 1.10", lambda v: v <= 1.10)
        add("S2", "training step >= 3x faster than Keras (gates in the loss)",
            ("keras_gru", "train"), (REFERENCE, "train"), ">= 3", lambda v: v >= 3.0)
        add("S2", "training step >= 3x faster than Keras (gates off)",
            ("keras_gru", "train"), ("gategru_nogates", "train"), ">= 3", lambda v: v >= 3.0)
    if "S3" in canonical:
        value = fractions.get(("S3", REFERENCE, "forward"))
        rows.append({"shape": "S3", "target": ">= 70% of the best matmul rate (gates on)",
                     "metric": "GRU forward GFLOP/s / best matmul GFLOP/s", "goal": ">= 0.70",
                     "value": value, "met": None if value is None else value >= 0.70})
    if long is not None:
        value = long.get("per_step_vs_s1")
        rows.append({"shape": "long", "target": "per-step time within 1.2x of S1's (gates on)",
                     "metric": "long per-step time / per-step time of S1-length calls "
                               "timed between its chunks", "goal": "<= 1.2",
                     "value": value, "met": None if value is None else value <= 1.2})
    return rows
