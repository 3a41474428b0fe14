"""Run benchmark suites and write their tables.

    python -m jobs.benchmark suite=lost_sales [benchmark.policies=[dp,base_stock]]
    python -m jobs.benchmark suite=all          (what `make benchmark` runs)

Writes ``<benchmark.results_dir>/<suite>.csv`` (columns suite, problem, instance, policy,
avg_cost, gap_pct), regenerates the tables of ``docs/benchmarks.md`` (its block
``benchmark:<suite>`` of every suite with a CSV; the prose around them, each suite's notes
included, is the file's own), and logs each table to MLflow as the run ``benchmark-<suite>``.
"""
from __future__ import annotations

import time

import pandas as pd

from jobs import _cli
from pipeline.config import PROJECT_ROOT, ConfigError, load_config, resolve_path
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import write_block

TEMPLATE = PROJECT_ROOT / "docs" / "benchmarks.md"  # its prose heads a report written elsewhere


def main(args: list[str]) -> int:
    cfg = load_config(args)
    from pipeline.studies.suites import SUITES, markdown, run_suite, selected, suite_table
    from pipeline.adapters.tracking import Tracker

    b = cfg.benchmark
    known = SUITES[b.suite].policies if b.suite != "all" else ()
    if not set(b.policies) <= set(known):
        raise ConfigError(f"benchmark.policies must be a subset of {', '.join(known)} (empty: all), "
                          f"got {list(b.policies)}")
    results = resolve_path(b.results_dir)
    plain = logs.get("")
    results.mkdir(parents=True, exist_ok=True)
    for suite in selected(b.suite):
        started = time.time()
        table = run_suite(suite, list(b.policies), progress=plain.info)
        csv = results / f"{suite}.csv"
        table.to_csv(csv, index=False)
        cfg.name = f"benchmark-{suite}"
        tracker = Tracker(cfg)
        problem = SUITES[suite].problem
        tracker.start(cfg, kind="benchmark", tags={"problem": problem, "instance": f"{problem} benchmark suite {suite}",
                                                   "policy_kind": "exact dp and heuristics"})
        tracker.log_table(table, suite)
        tracker.log_metrics({f"benchmark/{row.instance.replace('=', '').replace(';', '_')}/{row.policy}/{k}":
                             getattr(row, k) for row in table.itertuples() for k in ("avg_cost", "gap_pct")
                             if getattr(row, k) == getattr(row, k)})
        tracker.log_metrics({"wall_seconds": time.time() - started})
        tracker.finish()
        plain.info(markdown(table, f"python -m jobs.benchmark suite={suite}"))
        plain.info(f"Results: {csv}   ({time.time() - started:.0f}s)\n")
    docs = resolve_path(b.docs)
    for suite in SUITES:  # every suite with results
        csv = results / f"{suite}.csv"
        if csv.exists():
            body = suite_table(pd.read_csv(csv), f"python -m jobs.benchmark suite={suite}").rstrip("\n")
            write_block(docs, f"benchmark:{suite}", body, header=TEMPLATE.read_text())
    plain.info(f"Report:  {docs}")
    return 0


if __name__ == "__main__":
    _cli.run("benchmark", main)
