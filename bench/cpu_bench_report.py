"""The markdown table and the PNG plot of a cpu_bench.py report (its JSON as a dict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from cpu_bench_spec import REFERENCE, VARIANTS


def shape_label(name: str, report: dict, sep: str = " ") -> str:
    """S2 32×500×64×256, or 32×500×64×256 alone for a shape given as BxTxIxH."""
    dims = "×".join(map(str, report["shapes"][name]))
    return dims if name.lower().replace("x", "×") == dims else f"{name}{sep}{dims}"


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def markdown(report: dict) -> str:
    res = [r for r in report["results"] if r["status"] == "ok"]
    shapes = list(report["shapes"])
    names = [v for v in VARIANTS if any(r["variant"] == v for r in res)]
    by_key = {(r["shape"], r["variant"], r["mode"]): r for r in res}
    mm = report["matmul"]
    m = report["machine"]
    lines = [
        f"# CPU benchmark, {report['date']}"
        f"{'' if report.get('reset_after', True) else ', reset_after=False'}"
        f"{' (quick smoke run)' if report['quick'] else ''}",
        "",
        f"{(m.get('cpu') or {}).get('Model name', '?')}, {m['nproc']} cores, "
        f"ISA {'/'.join(m.get('isa', []))}; {report['threads']['threads']} threads everywhere; "
        f"TF {report['versions']['tensorflow']} (oneDNN opts "
        f"{report['versions'].get('tf_onednn_opts')}{_allocator(report)}), "
        f"Keras {report['versions']['keras']}, "
        f"torch {report['versions']['torch']}, oneDNN {report['versions']['onednn']}; "
        f"GateGRU's CPU kernels: {report['versions'].get('gategru_cpu_isa')}"
        + (" (GATEGRU_CPU_ISA)." if report["env"].get("GATEGRU_CPU_ISA") else "."),
        f"Best float32 matmul ({mm['n']}²): numpy {mm['numpy_best']:.0f}, tf.matmul "
        f"{mm['tf_best']:.0f}, best {mm['best_gflops']:.0f} GFLOP/s. Load average "
        f"{report['loadavg_start'][0]:.1f} at start, {report['loadavg_end'][0]:.1f} at end.",
        "Medians of interleaved repeats; only ratios within one run mean anything here.",
    ]
    for mode in ("forward", "train"):
        cols = [v for v in names if (mode in VARIANTS[v][1])
                and any((s, v, mode) in by_key for s in shapes)]
        if not cols:
            continue
        lines += ["", f"## {'Forward (inference)' if mode == 'forward' else 'Training step'}"
                  ": median ms (× = time / GateGRU-gates-on time; > 1: GateGRU faster)", "",
                  "| shape | " + " | ".join(VARIANTS[v][0] for v in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for s in shapes:
            cells = []
            for v in cols:
                r = by_key.get((s, v, mode))
                if r is None:
                    cells.append("–")
                elif r["vs_gates"] is None or v == REFERENCE:
                    cells.append(_fmt_ms(r["median_ms"]))
                else:
                    cells.append(f"{_fmt_ms(r['median_ms'])} (×{r['vs_gates']:.2f})")
            lines.append(f"| {shape_label(s, report)} | " + " | ".join(cells) + " |")
    lines += ["", "## Forward as a fraction of the best matmul rate; peak memory", "",
              "Fraction: " + report["flops_formula"] + ". Memory: " + report["settings"]["memory"]
              + ", MB, forward / train.", "",
              "| shape | " + " | ".join(VARIANTS[v][0] for v in names) + " |",
              "|---|" + "---|" * len(names)]
    for s in shapes:
        cells = []
        for v in names:
            f, t = by_key.get((s, v, "forward")), by_key.get((s, v, "train"))
            frac = f"{100 * f['matmul_fraction']:.2g}%" if f else "–"
            mem = " / ".join("–" if r is None or r["memory"].get("peak_mb") is None
                             else f"{r['memory']['peak_mb']:.0f}" for r in (f, t))
            cells.append(f"{frac}; {mem} MB")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if report["targets"]:
        lines += ["", "## Targets (issue #4)", "",
                  "Time ratios: the median of the ratios taken round by round (each round times "
                  "every variant within seconds), with their range over the rounds."
                  + ("" if report.get("reset_after", True) else " The issue sets them for "
                     "reset_after=True; here they are read for reset_after=False."), "",
                  "| shape | target | ratio | range over rounds | goal | met |",
                  "|---|---|---|---|---|---|"]
        for t in report["targets"]:
            value = "–" if t["value"] is None else f"{t['value']:.3g}"
            spread = ("–" if not t.get("range")
                      else f"{t['range'][0]:.3g}–{t['range'][1]:.3g}")
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['shape']} | {t['target']} | {value} | {spread} | {t['goal']} "
                         f"| {met} |")
    if report.get("long"):
        lg = report["long"]
        compared = []
        if lg.get("per_step_vs_s1"):
            compared.append(f"{lg['per_step_vs_s1']:.2f}× the per-step time of "
                            f"{lg['short_steps']}-step calls timed between the chunks, "
                            f"{lg['short_per_step_us']:.2f} µs")
        if lg.get("s1_per_step_us"):
            compared.append(f"S1's row above: {lg['s1_per_step_us']:.2f} µs/step")
        lines += ["", "## Long sequence", "",
                  f"GateGRU, gates on, B×T×I×H = {'×'.join(map(str, lg['dims']))} in chunks of "
                  f"{lg['chunk']} steps: {lg['total_s']:.1f} s, {lg['per_step_us']:.2f} µs/step"
                  + (f" ({'; '.join(compared)})" if compared else "")
                  + f"; peak RSS growth {lg['peak_rss_delta_mb'] or 0:.0f} MB (process peak "
                  f"{lg['peak_rss_mb']:.0f} MB), TF allocator peak growth "
                  f"{lg['peak_tf_alloc_delta_mb'] or 0:.0f} MB."]
    lines += ["", "## Output checks", "",
              "Forward outputs, max abs difference (h / gates) against the reference named; "
              "flagged above 1e-4.", ""]
    for s, per in report["output_checks"].items():
        cells = []
        for v, d in per.items():
            refs = f"vs {d['h_reference']}" + (f" / {d['gates_reference']}" if "gates" in d
                                               else "")
            diff = f"{d['h']:.1e}" + (f" / {d['gates']:.1e}" if "gates" in d else "")
            flag = " **MISMATCH**" if max(d["h"], d.get("gates", 0.0)) > 1e-4 else ""
            cells.append(f"{v} {diff} ({refs}){flag}")
        lines.append(f"- {s}: " + "; ".join(cells))
    skipped = {v: info["reason"] for v, info in report["variants"].items()
               if not info["available"]}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{v} ({why})" for v, why in skipped.items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in report["results"] if r["status"] == "ok"]
    modes = [m for m in ("forward", "train") if any(r["mode"] == m for r in res)]
    shapes = list(report["shapes"])
    fig, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 5.4), squeeze=False)
    colors = dict(zip(VARIANTS, plt.get_cmap("tab10").colors, strict=False))  # same in each plot
    handles: dict[str, Any] = {}
    for ax, mode in zip(axes[0], modes, strict=True):
        names = [v for v in VARIANTS if any(r["variant"] == v and r["mode"] == mode
                                           for r in res)]
        width = 0.8 / max(1, len(names))
        for j, v in enumerate(names):
            ms = [next((r["median_ms"] for r in res if (r["shape"], r["variant"], r["mode"])
                        == (s, v, mode)), np.nan) for s in shapes]
            handles[v] = ax.bar(np.arange(len(shapes)) + (j - (len(names) - 1) / 2) * width,
                                ms, width, color=colors[v], label=VARIANTS[v][0])
        ax.set_yscale("log")
        labels = [shape_label(s, report, "\n") for s in shapes]
        crowded = len(shapes) > 4 and any("\n" not in label for label in labels)
        ax.set_xticks(np.arange(len(shapes)), labels, rotation=30 if crowded else 0,
                      ha="right" if crowded else "center")
        ax.set_ylabel("median ms (log)")
        ax.set_title(f"{'forward' if mode == 'forward' else 'training step'}, "
                     f"{report['threads']['threads']} threads")
        ax.grid(axis="y", which="both", alpha=0.3)
    order = [v for v in VARIANTS if v in handles]
    fig.legend([handles[v] for v in order], [VARIANTS[v][0] for v in order],
               loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"gategru CPU benchmark {report['date']} "
                 f"({(report['machine'].get('cpu') or {}).get('Model name', '')})")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _allocator(report: dict) -> str:
    caching = report["versions"].get("tf_cpu_allocator_caching")
    if caching is None:  # runs before the field existed
        return ""
    return ", CPU allocator " + ("caching" if caching else "not caching: fresh pages")
