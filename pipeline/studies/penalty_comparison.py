"""Structure-informed against plain DirectBackprop on one problem (``jobs.sipn``): the paper's Figure 1,
robustness under shocks and off-distribution starts, and the numbers. The study: docs/sipn.md, The study.
"""
from __future__ import annotations

import time

import pandas as pd

from pipeline.config import Config, ConfigError, load_config, resolve_path
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block
from pipeline.adapters.tracking import Tracker
from pipeline.adapters.training_run import train
from pipeline.core.evaluation import format_table, held_out_report
from pipeline.core.problems import get_problem
from pipeline.core.robustness import robustness_table
from pipeline.core.rollout import rollout
from pipeline.data.parquet import read_products
from pipeline.data.synthetic import materialize
from pipeline.reporting.plots import order_contours

log = logs.get("sipn")
out = logs.get("")
TITLE = "# Structure-informed policy networks: penalized against plain DirectBackprop\n"  # of a new doc


def run(cfg: Config, args: list[str]) -> int:
    """The study of ``cfg`` (``args``: the command line it came from, for the child runs'
    configs and the report)."""
    if max(cfg.penalty.weights) <= 0:
        raise ConfigError("penalty.weights must be > 0 for the penalized run of jobs.sipn")

    started = time.time()
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])
    out_dir = resolve_path(cfg.output_dir)
    tracker = Tracker(cfg)
    run_id = tracker.start(cfg, kind="sipn")
    runs = {"plain": [f"name={cfg.name}-plain", "penalty.weights=[0.0]"], "sipn": [f"name={cfg.name}-sipn"]}
    with tracker.ending():
        policies = {}
        for label, extra in runs.items():
            out.info("")
            log.info(f"training {label}: python -m jobs.train {' '.join(args + extra)}")
            result = train(load_config(args + extra), parent_run_id=run_id)
            out.info("\n" + result.summary)
            out.info(result.footer)
            tracker.client.set_tag(run_id, f"run_{label}", result.run_id)
            policies[label] = result.policy

        splits = materialize(cfg.data, cfg.seed, out_dir)
        test, train_batch = read_products(splits["test"]), read_products(splits["train"])
        out.info("")
        log.info("nominal evaluation on held-out products ...")
        nominal, baselines, _ = held_out_report(cfg, problem, policies, train_batch, test, width)
        out.info(format_table(nominal))
        out.info("")
        log.info("robustness: shocks and off-distribution starts ...")
        robust = robustness_table(cfg, problem, {**policies, **baselines}, set(policies), test, width,
                                  progress=lambda line: out.info(f"  {line}"))
        start = cfg.eval.start
        visited = {k: rollout(problem, p, test, start, test.periods - start, width,
                              record_states=True).states.detach() for k, p in policies.items()}
        figure = order_contours(policies, test, start, width, problem.state_names(width), visited,
                                cfg.penalty.probe_widen, products=cfg.eval.plot_products)

        results = out_dir / cfg.name
        results.mkdir(parents=True, exist_ok=True)
        nominal.to_csv(results / "nominal.csv", index=False)
        robust.to_csv(results / "robustness.csv", index=False)
        docs = resolve_path("docs")
        fig_path = docs / "figures" / f"{cfg.name}.png"
        fig_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(fig_path, dpi=110)
        summary = summarize(nominal, robust, cfg.problem.objective)
        command = "python -m jobs.sipn " + " ".join(args)
        write_section(docs / "sipn.md", cfg.name, section(cfg, problem, command, summary, nominal, robust,
                                                          fig_path.relative_to(docs), time.time() - started))
        tracker.log_table(nominal, "nominal")
        tracker.log_table(robust, "robustness")
        tracker.log_figure(figure, "plots/order_contours.png")
        tracker.log_metrics({f"sipn/{k}": v for k, v in summary.items() if isinstance(v, float)})
    out.info("\n" + "\n".join(f"{k}: {v}" for k, v in summary.items()))
    out.info(f"\nResults: {results}  docs/sipn.md  {fig_path}")
    out.info(f"MLflow run: {run_id} at {tracker.uri}  ({time.time() - started:.0f}s)")
    return 0


def summarize(nominal, robust, objective: str) -> dict:
    """The headline numbers: the penalized policy's in-distribution cost against the plain
    one's, both violation rates, and the scenarios where the penalized policy does better."""
    key = "avg_cost" if objective == "cost" else "avg_reward"
    sign = 1 if objective == "cost" else -1
    n = nominal.set_index("policy")
    out = {f"plain_{key}": float(n.loc["plain", key]), f"sipn_{key}": float(n.loc["sipn", key]),
           "sipn_vs_plain_pct": float(sign * 100 * (n.loc["sipn", key] - n.loc["plain", key]) / abs(n.loc["plain", key]))}
    for label in ("plain", "sipn"):
        for region in ("in", "out"):
            out[f"{label}_violation_rate_{region}"] = float(n.loc[label, f"violation_rate_{region}"])
    wide = robust.pivot(index="scenario", columns="policy", values=key)
    better = [s for s in wide.index if s != "nominal" and sign * (wide.loc[s, "sipn"] - wide.loc[s, "plain"]) < 0]
    out["sipn_better_under"] = ", ".join(better) or "none"
    return out


def section(cfg, problem, command, summary, nominal, robust, figure, seconds) -> str:
    key = "avg_cost" if cfg.problem.objective == "cost" else "avg_reward"
    networks = ("plain", "sipn")
    headline = pd.DataFrame([
        [f"{key} (held-out, nominal)", f"{summary[f'plain_{key}']:.4f}",
         f"{summary[f'sipn_{key}']:.4f} ({summary['sipn_vs_plain_pct']:+.2f}%)"],
        ["violation rate, visited states", *(f"{100 * summary[f'{p}_violation_rate_in']:.2f}%" for p in networks)],
        ["violation rate, out of distribution",
         *(f"{100 * summary[f'{p}_violation_rate_out']:.2f}%" for p in networks)]], columns=["", *networks])
    wide = robust.pivot(index="scenario", columns="policy", values=key)
    viol = robust[robust.violation_rate_out.notna()].pivot(index="scenario", columns="policy",
                                                           values=["violation_rate_in", "violation_rate_out"])
    scenarios = wide.loc[list(dict.fromkeys(robust.scenario))].reset_index()
    for p in networks:
        scenarios[f"{p} viol. in / out"] = [f"{100 * viol.loc[s, ('violation_rate_in', p)]:.1f}% / "
                                            f"{100 * viol.loc[s, ('violation_rate_out', p)]:.1f}%"
                                            for s in scenarios.scenario]
    lines = [f"## {cfg.name}: {problem.name}, lead times {cfg.data.lead_time_range}",
             "", f"Command: `{command}` ({seconds / 60:.0f} min for the last invocation; a training "
             "run that had already finished is reused, not retrained). "
             f"Penalty weights {list(cfg.penalty.weights)}, probe share {cfg.penalty.probe_share}, "
             f"probe box x{cfg.penalty.probe_widen}. Held-out products and periods as in `jobs.train`.",
             "", markdown_table(headline),
             "", f"Penalized cheaper than plain under: {summary['sipn_better_under']}.", "",
             f"{key} per product-period by scenario (violation rates in / out for the networks):", "",
             markdown_table(scenarios, {c: ".4f" for c in wide.columns}),
             "", f"![order contours, plain top, penalized bottom]({figure})", "",
             "Nominal evaluation (all policies):", "", "```", format_table(nominal), "```", ""]
    return "\n".join(lines)


def write_section(path, name: str, body: str) -> None:
    """Replace (or append) the block ``sipn:<name>`` of ``path``; the prose around the
    blocks is the file's own (docs/sipn.md: its header, then the sections, then notes)."""
    write_block(path, f"sipn:{name}", body, header=TITLE)
