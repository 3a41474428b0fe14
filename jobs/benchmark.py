"""Run benchmark suites and write their tables.

    python -m jobs.benchmark suite=lost_sales [benchmark.policies=[dp,base_stock]]
    python -m jobs.benchmark suite=lost_sales benchmark.policies=[learned]   (the network's row)
    python -m jobs.benchmark suite=all          (what `make benchmark` runs: every policy, learned included)

Writes ``<benchmark.results_dir>/<suite>.csv`` (columns suite, problem, instance, policy,
avg_cost, gap_pct, and for the learned rows the simulated costs and the standard error of the
paired gap): the rows of the policies run replace theirs, the others stay. Regenerates the
tables of ``docs/benchmarks.md`` (its block ``benchmark:<suite>`` of every suite with a CSV;
the prose around them, each suite's notes included, is the file's own), the figures of the
gaps by instance, and logs each table to MLflow as the run ``benchmark-<suite>``. The learned
row trains the suite's network as the run ``benchmark-<suite>-learned-<hash>`` with
``conf/learned/<suite>.yaml`` (docs/benchmarks.md, Learned rows).
"""
from __future__ import annotations

import time

import pandas as pd

from jobs import _cli
from pipeline.config import PROJECT_ROOT, ConfigError, load_config, resolve_path
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

TEMPLATE = PROJECT_ROOT / "docs" / "benchmarks.md"  # its prose heads a report written elsewhere


def template() -> str:
    return TEMPLATE.read_text() if TEMPLATE.exists() else ""  # an installed package carries no docs
LEARNED = "learned"


def main(args: list[str]) -> int:
    cfg = load_config(args)
    from pipeline.studies.suites import COLUMNS, SUITES, markdown, run_suite, selected, suite_table
    from pipeline.studies.suites import learned as learned_row
    from pipeline.adapters.tracking import Tracker
    from pipeline.reporting.plots import gap_bars

    b = cfg.benchmark
    known = (*SUITES[b.suite].policies, LEARNED) if b.suite != "all" else ("dp", LEARNED)
    if not set(b.policies) <= set(known):
        raise ConfigError(f"benchmark.policies must be a subset of {', '.join(known)} (empty: all), "
                          f"got {list(b.policies)}")
    results, figures = resolve_path(b.results_dir), resolve_path(b.figures)
    plain = logs.get("")
    results.mkdir(parents=True, exist_ok=True)
    summary = {}
    for suite in selected(b.suite):
        started = time.time()
        wanted = list(b.policies) or [*SUITES[suite].policies, LEARNED]
        exact = [p for p in wanted if p != LEARNED]
        csv = results / f"{suite}.csv"
        table = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=COLUMNS)
        table = table[~table.policy.isin(wanted)]
        if exact:
            table = merge(table, run_suite(suite, exact, progress=plain.info))
        if LEARNED in wanted:
            dp_cost = exact_dp(table, SUITES[suite], plain.info)
            rows, info = learned_row.run(load_config([*args, f"learned={suite}"]), SUITES[suite], dp_cost,
                                         progress=plain.info, figures=figures)
            table = merge(table, rows)
            summary[suite] = info
        table.to_csv(csv, index=False)
        cfg.name = f"benchmark-{suite}"
        tracker = Tracker(cfg)
        problem = SUITES[suite].problem
        tracker.start(cfg, kind="benchmark", tags={"problem": problem, "instance": f"{problem} benchmark suite {suite}",
                                                   "policy_kind": "exact dp, heuristics and the learned policy"})
        tracker.log_table(table, suite)
        tracker.log_metrics({f"benchmark/{row.instance.replace('=', '').replace(';', '_')}/{row.policy}/{k}":
                             getattr(row, k) for row in table.itertuples() for k in ("avg_cost", "gap_pct")
                             if getattr(row, k) == getattr(row, k)})
        tracker.log_metrics({"wall_seconds": time.time() - started})
        bars = gap_bars(table, f"{suite}: gap to the optimum by instance")
        tracker.log_figure(bars, f"plots/benchmark_{suite}_gaps.png")
        figures.mkdir(parents=True, exist_ok=True)
        bars.savefig(figures / f"benchmark-{suite}-gaps.png", dpi=110)
        tracker.finish()
        plain.info(markdown(table, f"python -m jobs.benchmark suite={suite}"))
        plain.info(f"Results: {csv}   ({time.time() - started:.0f}s)\n")
    docs = resolve_path(b.docs)
    for suite in SUITES:  # every suite with results
        csv = results / f"{suite}.csv"
        if csv.exists():
            body = suite_table(pd.read_csv(csv), f"python -m jobs.benchmark suite={suite}").rstrip("\n")
            write_block(docs, f"benchmark:{suite}", body, header=template())
    if summary:
        write_block(docs, "benchmark:learned", learned_summary(summary, results, args),
                    header=template())
    plain.info(f"Report:  {docs}")
    return 0


def merge(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` added to ``table``, instances in the order they first appear, policies in the
    order of their rows within each instance."""
    both = pd.concat([df for df in (table, rows) if len(df)], ignore_index=True)
    order = {k: i for i, k in enumerate(dict.fromkeys(both.instance))}
    return both.sort_values("instance", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def exact_dp(table: pd.DataFrame, suite, progress) -> dict[str, float]:
    """The exact optimum by instance key: the table's dp rows, else solved now."""
    from pipeline.studies.suites.instances import instance_key

    known = dict(zip(table[table.policy == "dp"].instance, table[table.policy == "dp"].avg_cost))
    for inst in suite.instances:
        if instance_key(inst) not in known:
            progress(f"[benchmark {suite.name}] exact optimum of {instance_key(inst)} ...")
            known[instance_key(inst)] = suite.evaluate(inst, ("dp",))["dp"]
    return known


def learned_summary(summary: dict, results, args: list[str]) -> str:
    """The learned rows' report block: per suite its network's run, gaps and times (kept in
    ``<results>/learned.csv``, this run's suites replacing theirs), and each learning curve as
    ``<results>/learned_curve_<suite>.csv``."""
    rows = []
    for suite, info in summary.items():
        gaps = pd.read_csv(results / f"{suite}.csv").query("policy == @LEARNED").gap_pct
        info["curve"].to_csv(results / f"learned_curve_{suite}.csv", index=False)
        t = info["timing"]
        rows.append({"suite": suite, "products": info["products"], "mean_gap_pct": gaps.mean(),
                     "worst_gap_pct": gaps.max(), **{k: round(v, 1) for k, v in t.items()},
                     "run": info["run"], "command": "python -m jobs.benchmark " + " ".join(args),
                     "date": time.strftime("%Y-%m-%d")})
    path = results / "learned.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(rows[0]))
    pd.concat([old[~old.suite.isin(summary)], pd.DataFrame(rows)], ignore_index=True).to_csv(path, index=False)
    return learned_block(path)


def learned_block(path) -> str:
    """The report block of ``learned.csv``: one row per suite, in registry order."""
    from pipeline.studies.suites import SUITES

    runs = pd.read_csv(path)
    runs = runs.set_index("suite").loc[[s for s in SUITES if s in set(runs.suite)]].reset_index()
    shown = pd.DataFrame({"suite": runs.suite, "products": runs.products.map("{:,}".format),
                          "mean gap": runs.mean_gap_pct.map("{:+.3f}%".format),
                          "worst gap": runs.worst_gap_pct.map("{:+.3f}%".format),
                          "training s": runs.train_seconds.map("{:.0f}".format),
                          "DP solves s": runs.dp_seconds.map("{:.0f}".format),
                          "evaluation s": runs.eval_seconds.map("{:.0f}".format),
                          "total s": runs.total_seconds.map("{:.0f}".format),
                          "command": runs.command.map("`{}`".format), "date": runs.date})
    return (f"Times on this machine; all: {runs.total_seconds.sum() / 60:.1f} min. Learning curves: "
            "`benchmarks/results/learned_curve_<suite>.csv`; the table: `benchmarks/results/learned.csv`.\n\n"
            + markdown_table(shown))


if __name__ == "__main__":
    _cli.run("benchmark", main)
