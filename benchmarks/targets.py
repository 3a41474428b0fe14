"""The speed targets in one table (docs/performance.md, Targets), from the results the
benchmarks left in ``benchmarks/results/``: the last ``make perf``.

    python -m benchmarks.targets

- the default (CNN) policy's step at 8,192 x 50 and 1,024 x 50, and the MLP's at 8,192 x 50,
  2 threads (``step_speed_cpu.csv``);
- a ``jobs.train`` epoch over 100,000 products against the step alone (``scale.csv``);
- training time to within 1% and 0.3% of the exact optimum, CNN and MLP, every seed, and the
  largest standard error of the paired gap (``time_to_quality.csv``);
- the GPU step (``step_speed_cuda.csv``), where a GPU was there to measure it.

Each row names its command, its date and the load average at its start (``<name>.run.json``).
"""
from __future__ import annotations

import json

import pandas as pd

from benchmarks import run_script
from pipeline.config import PROJECT_ROOT
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
DOC = PROJECT_ROOT / "docs" / "performance.md"
STEP_CNN, STEP_MLP, JOB_SHARE, TO_1PCT_S, TO_03PCT_S, MAX_SE = 1.5e6, 3.0e6, 0.70, 45.0, 120.0, 0.05


def provenance(name: str) -> tuple[str, str, str]:
    """(command, date, load at start) of ``<name>.run.json``; blanks when it is missing."""
    path = RESULTS / f"{name}.run.json"
    if not path.exists():
        return "", "", ""
    run = json.loads(path.read_text())
    return f"`{run['command']}`", run["date"], f"{run['load_at_start']:.2f}"


def step_rows() -> list[dict]:
    path = RESULTS / "step_speed_cpu.csv"
    if not path.exists():
        return []
    s = pd.read_csv(path)
    s = s[(s.call == "forward+backward") & (s.threads == 2)].set_index(["kind", "batch"]).product_periods_per_s
    src = provenance("step_speed_cpu")
    rows = []
    if ("cnn", 8192) in s:
        rows.append(row("CNN policy step, 8,192 x 50, 2 threads (product-periods/s)", f">= {STEP_CNN:,.0f}",
                        f"{s['cnn', 8192]:,.0f}", s["cnn", 8192] >= STEP_CNN, src))
    if ("cnn", 8192) in s and ("cnn", 1024) in s:
        rows.append(row("CNN step per product-period, 8,192 against 1,024", "no slower",
                        f"{s['cnn', 8192] / s['cnn', 1024]:.2f}x the rate ({s['cnn', 1024]:,.0f} at 1,024)",
                        s["cnn", 8192] >= s["cnn", 1024], src))
    if ("mlp", 8192) in s:
        rows.append(row("MLP policy step, 8,192 x 50, 2 threads (product-periods/s)", f">= {STEP_MLP:,.0f}",
                        f"{s['mlp', 8192]:,.0f}", s["mlp", 8192] >= STEP_MLP, src))
    return rows


def job_rows() -> list[dict]:
    path = RESULTS / "scale.csv"
    if not path.exists():
        return []
    s = pd.read_csv(path)
    share = s[(s.benchmark == "scale/share_of_step") & s.config.str.startswith("products=100000;")]
    rows = []
    for config, value in zip(share.config, share.value):
        epoch = config.rsplit("epoch=", 1)[1]
        kind = config.split("kind=", 1)[1].split(";")[0]
        rows.append(row(f"`jobs.train` epoch {epoch} on 100,000 products, {kind}: job rate / step rate "
                        "(wall time, Ray Data and validation included)", f">= {JOB_SHARE:.0%}", f"{value:.0%}",
                        value >= JOB_SHARE, provenance("scale")))
    return rows


def quality_rows() -> list[dict]:
    from benchmarks.time_to_quality import reached

    path = RESULTS / "time_to_quality.csv"
    if not path.exists():
        return []
    curves, src = pd.read_csv(path), provenance("time_to_quality")
    rows = []
    for kind, runs in curves.groupby("kind", sort=False):
        for target, limit in ((1.0, TO_1PCT_S), (0.3, TO_03PCT_S)):
            times = {seed: reached(c, target) for seed, c in runs.groupby("seed")}
            worst = None if any(t is None for t in times.values()) else max(times.values())
            shown = ", ".join(f"seed {k}: {'not reached' if t is None else f'{t:.0f} s'}" for k, t in times.items())
            rows.append(row(f"{kind.upper()} policy, training time to within {target:g}% of the exact optimum",
                            f"<= {limit:.0f} s, every seed", shown, worst is not None and worst <= limit, src))
        se = runs.gap_se_pct.max()
        rows.append(row(f"{kind.upper()} policy, largest standard error of the paired gap (points)",
                        f"<= {MAX_SE}", f"{se:.3f}", se <= MAX_SE, src))
    return rows


def gpu_rows() -> list[dict]:
    path = RESULTS / "step_speed_cuda.csv"
    if not path.exists():
        return [row("GPU step, batches 2^16 to 2^20, eager and compiled", "measured when a GPU is lent",
                    "not measured: no GPU machine was lent", None, ("", "", ""))]
    s = pd.read_csv(path)
    best = s[s.call.str.startswith("forward+backward")].product_periods_per_s.max()
    return [row("GPU step, best forward+backward (product-periods/s)", "measured", f"{best:,.0f}", None,
                provenance("step_speed_cuda"))]


def row(figure: str, target: str, measured: str, met, source: tuple[str, str, str]) -> dict:
    command, date, load = source
    return {"figure": figure, "target": target, "measured": measured,
            "met": "" if met is None else ("yes" if met else "**no**"), "command": command, "date": date,
            "load at start": load}


def main(args: list[str]) -> int:
    from benchmarks.perf import machine

    rows = step_rows() + job_rows() + quality_rows() + gpu_rows()
    info = machine()
    lines = ["## Targets", "",
             f"Machine: {info['CPU']}, {info['cores']}, {info['RAM']}; {info['OS']}; Python / torch / ray "
             f"{info['Python / torch / ray']}. Each figure from the last run of its command (`make perf` runs "
             "them all), with its date and the load average at its start; `python -m benchmarks.targets` "
             "rebuilds this table from `benchmarks/results/`.", "",
             markdown_table(pd.DataFrame(rows))]
    write_block(DOC, "perf:targets", "\n".join(lines), header="# Performance\n")
    logs.get("").info("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_script(main)
