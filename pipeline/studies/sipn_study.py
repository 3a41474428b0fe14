"""Plain, penalized and structure-by-construction DirectBackprop on one problem over several seeds
(``jobs.sipn``): every seed's nominal and shock costs and violation rates into
``benchmarks/results/sipn.csv``, the per-problem summary, the violation map (the paper's Figure 1
with the violating region marked) and the seeds' cost against violation. The study: docs/sipn.md.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.tracking import Tracker
from pipeline.adapters.training_run import train
from pipeline.config import Config, ConfigError, load_config, resolve_path
from pipeline.core.penalty import penalty_properties
from pipeline.core.problems import get_problem
from pipeline.core.robustness import robustness_table
from pipeline.data.parquet import read_products
from pipeline.data.synthetic import materialize
from pipeline.reporting import logs
from pipeline.reporting.plots import seed_scatter, violation_map
from pipeline.reporting.report_blocks import markdown_table, write_block

log = logs.get("sipn")
out = logs.get("")
TITLE = "# Structure-informed policy networks: plain, penalized and structured by construction\n"
COLUMNS = ["problem", "seed", "policy", "scenario", "avg_cost", "violation_in", "violation_out"]
TIME_COLUMNS = ["problem", "seed", "policy", "epochs", "train_seconds"]
# what each policy of the study changes in the configuration
VARIANTS = {"plain": ["policy.structure=free", "penalty.weights=[0.0]"],
            "penalized": ["policy.structure=free"],
            "by_construction": ["policy.structure=by_construction", "penalty.weights=[0.0]"]}


def run(cfg: Config, args: list[str]) -> int:
    """The study of ``cfg`` (``args``: the command line it came from, for the child runs'
    configs and the report)."""
    if max(cfg.penalty.weights) <= 0 and "penalized" in cfg.sipn.policies:
        raise ConfigError("penalty.weights must be > 0 for the penalized policy of jobs.sipn")
    started = time.time()
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])
    out_dir = resolve_path(cfg.output_dir)
    results_dir = out_dir / cfg.name
    results_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(cfg)
    run_id = tracker.start(cfg, kind="sipn")
    rows, times, shown = [], [], None
    with tracker.ending():
        for seed in cfg.sipn.seeds:
            tic = time.time()
            seed_cfg = load_config(args + [f"seed={seed}"])
            policies = {}
            for label in cfg.sipn.policies:
                extra = [f"seed={seed}", f"name={cfg.name}-s{seed}-{label}", "mlflow.register=false", *VARIANTS[label]]
                out.info("")
                log.info(f"seed {seed}, {label}: python -m jobs.train {' '.join(args + extra)}")
                result = train(load_config(args + extra), parent_run_id=run_id, evaluate=False)
                policies[label], _, _ = ckpt.load_policy(result.best_checkpoint)
                times.append(dict(problem=problem.name, seed=seed, policy=label, epochs=cfg.train.epochs,
                                  train_seconds=round(training_seconds(tracker.client, result.run_id), 1)))
                tracker.client.set_tag(run_id, f"run_s{seed}_{label}", result.run_id)
            test = read_products(materialize(seed_cfg.data, seed, out_dir)["test"])
            log.info(f"seed {seed}: nominal, shocks and unusual starts on {test.size} held-out products ...")
            table = robustness_table(seed_cfg, problem, policies, set(policies), test, width)
            rows += [dict(problem=problem.name, seed=seed, policy=r.policy, scenario=r.scenario, avg_cost=r.avg_cost,
                          violation_in=r.violation_rate_in, violation_out=r.violation_rate_out)
                     for r in table.itertuples()]
            log.info(f"seed {seed} done in {time.time() - tic:.0f}s: " + ", ".join(
                f"{r.policy} {r.avg_cost:.4f}" for r in table[table.scenario == "nominal"].itertuples()))
            if shown is None:
                shown = (policies, test, seed_cfg)
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame.to_csv(results_dir / "sipn.csv", index=False)
        csv = store(frame, resolve_path(cfg.sipn.results) / "sipn.csv", problem.name)
        spent = store(pd.DataFrame(times, columns=TIME_COLUMNS), resolve_path(cfg.sipn.results) / "sipn_time.csv",
                      problem.name)

        docs = resolve_path("docs")
        policies, test, seed_cfg = shown
        props = penalty_properties(problem, width, list(cfg.penalty.properties))
        figure = violation_map(policies, problem, props, test, seed_cfg.eval.start, width,
                               products=cfg.eval.plot_products, multiple=cfg.sipn.slice_multiple)
        fig_path = docs / "figures" / f"sipn_{problem.name}.png"
        fig_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(fig_path, dpi=100)
        tracker.log_figure(figure, "plots/violation_map.png")
        scatter = seed_scatter(csv)
        scatter.savefig(docs / "figures" / "sipn_seeds.png", dpi=100)
        tracker.log_figure(scatter, "plots/seeds.png")
        summary = summarize(frame, spent[spent.problem == problem.name])
        command = "python -m jobs.sipn " + " ".join(args)
        write_section(docs / "sipn.md", problem.name,
                      section(cfg, problem, command, frame, summary, fig_path.relative_to(docs), time.time() - started))
        write_section(docs / "sipn.md", "overview", overview(csv, spent))
        tracker.log_table(frame, "sipn")
        tracker.log_table(public(summary), "summary")
    out.info("\n" + markdown_table(public(summary)))
    out.info(f"\nResults: {results_dir}/sipn.csv  {resolve_path(cfg.sipn.results) / 'sipn.csv'}  docs/sipn.md  {fig_path}")
    out.info(f"MLflow run: {run_id} at {tracker.uri}  ({time.time() - started:.0f}s)")
    return 0


def training_seconds(client, run_id: str) -> float:
    """The seconds a training run spent in its epochs and validations, from its MLflow
    metrics (``train/epoch_seconds``, ``valid/seconds``; the last value of each epoch), so
    that a run reused by a later invocation keeps the time it took."""
    total = 0.0
    for key in ("train/epoch_seconds", "valid/seconds"):
        total += sum({m.step: m.value for m in sorted(client.get_metric_history(run_id, key),
                                                      key=lambda m: m.timestamp)}.values())
    return total


def store(frame: pd.DataFrame, path: Path, problem: str) -> pd.DataFrame:
    """Replace ``problem``'s rows of the CSV at ``path`` with ``frame`` (the other problems'
    rows stay); returns the whole table."""
    if path.exists():
        old = pd.read_csv(path)
        frame = pd.concat([old[old.problem != problem], frame], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}  # Student t, two-sided 95%, by degrees of freedom


def interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% Student-t interval over seeds (NaN bounds
    for one value)."""
    s = pd.Series(values, dtype=float)
    mean, n = float(s.mean()), len(s)
    if n < 2:
        return mean, math.nan, math.nan
    t = T_975[max(k for k in T_975 if k <= n - 1)] if n - 1 <= 30 else 1.96
    half = t * float(s.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def summarize(frame: pd.DataFrame, spent: pd.DataFrame) -> pd.DataFrame:
    """One row per structured policy (penalized, by construction) of one problem, against
    the plain network of the same seeds: the nominal cost difference (mean over seeds and
    95% interval, %), the violation rates (mean over seeds; nominal in and out, and the
    worst scenario's), the scenarios where its mean cost over seeds is lower, its mean cost
    over the shock and start scenarios against the plain one's, and the training time."""
    wide = frame.pivot_table(index=["seed", "scenario"], columns="policy", values="avg_cost")
    scen = [s for s in dict.fromkeys(frame.scenario) if s != "nominal"]
    mean_cost = frame.groupby(["scenario", "policy"]).avg_cost.mean()
    seconds = spent.groupby("policy").train_seconds.mean()
    rows = []
    for label in [p for p in dict.fromkeys(frame.policy) if p != "plain"]:
        nominal = wide.xs("nominal", level="scenario")
        diff = 100 * (nominal[label] - nominal["plain"]) / nominal["plain"]
        mean, low, high = interval(diff)
        mine = frame[frame.policy == label]
        viol = mine.groupby("scenario")[["violation_in", "violation_out"]].mean()
        wins = [s for s in scen if mean_cost[(s, label)] < mean_cost[(s, "plain")]]
        shock_mine = sum(mean_cost[(s, label)] for s in scen) / max(1, len(scen))
        shock_plain = sum(mean_cost[(s, "plain")] for s in scen) / max(1, len(scen))
        rows.append({
            "policy": label, "seeds": len(diff),
            "nominal cost vs plain": f"{mean:+.2f}% [{low:+.2f}, {high:+.2f}]",
            "violations in / out (nominal)": f"{100 * viol.loc['nominal', 'violation_in']:.2f}% / "
                                             f"{100 * viol.loc['nominal', 'violation_out']:.2f}%",
            "worst scenario in / out": f"{worst(viol.violation_in)} / {worst(viol.violation_out)}",
            "shock and start mean cost vs plain": f"{100 * (shock_mine - shock_plain) / shock_plain:+.2f}%",
            "lower cost under": f"{len(wins)} of {len(scen)}" + (f" ({', '.join(wins)})" if wins else ""),
            "train s (plain)": f"{seconds.get(label, math.nan):.0f} ({seconds.get('plain', math.nan):.0f})",
            "_mean": mean, "_high": high, "_viol": float(viol[["violation_in", "violation_out"]].max().max()),
            "_shock": (shock_mine - shock_plain) / shock_plain, "_wins": len(wins), "_scen": len(scen)})
    return pd.DataFrame(rows)


def worst(rates: pd.Series) -> str:
    """The largest of the scenarios' violation rates, and its scenario where it is not 0."""
    top = float(rates.max())
    return f"{100 * top:.2f}%" + (f" ({rates.idxmax()})" if top > 0 else "")


def targets(s: pd.Series) -> str:
    """Which of the study's targets (docs/sipn.md, Targets) the row of ``summarize`` meets."""
    checks = {"cost <= +0.2%": s["_mean"] <= 0.2, "violations <= 0.5%": s["_viol"] <= 0.005,
              "shocks: mean <= plain": s["_shock"] <= 0, "shocks: lower in most": s["_wins"] > s["_scen"] / 2}
    return ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in checks.items())


def public(summary: pd.DataFrame) -> pd.DataFrame:
    shown = summary[[c for c in summary.columns if not c.startswith("_")]].copy()
    shown["targets"] = [targets(r) for _, r in summary.iterrows()]
    return shown


def section(cfg, problem, command, frame, summary, figure, seconds) -> str:
    per_seed = frame.pivot_table(index=["scenario", "seed"], columns="policy", values="avg_cost").reset_index()
    order = {s: i for i, s in enumerate(dict.fromkeys(frame.scenario))}
    per_seed = per_seed.sort_values(["scenario", "seed"], key=lambda c: c.map(order) if c.name == "scenario" else c)
    viol = frame.groupby(["scenario", "policy"])[["violation_in", "violation_out"]].mean().unstack("policy")
    vt = pd.DataFrame({"scenario": list(order)})
    for p in dict.fromkeys(frame.policy):
        vt[f"{p} in / out"] = [f"{100 * viol.loc[s, ('violation_in', p)]:.2f}% / "
                               f"{100 * viol.loc[s, ('violation_out', p)]:.2f}%" for s in order]
    policies = list(dict.fromkeys(frame.policy))  # as trained: plain first
    per_seed = per_seed[["scenario", "seed", *policies]]
    lines = [f"## {problem.name}: {cfg.name}, lead times {cfg.data.lead_time_range}", "",
             f"Command: `{command}` ({seconds / 60:.0f} min on this machine for the last invocation; runs that "
             f"had already finished are reused). Seeds {list(cfg.sipn.seeds)}; {cfg.data.num_products} products, "
             f"{cfg.train.epochs} epochs; penalty weights {list(cfg.penalty.weights)}, probe share "
             f"{cfg.penalty.probe_share}, probe box x{cfg.penalty.probe_widen}, shock probes "
             f"{cfg.penalty.shock_share} (x{cfg.penalty.shock_factors[0]:g} .. x{cfg.penalty.shock_factors[1]:g}).",
             "", markdown_table(public(summary)), "",
             "Violation rates by scenario (mean over seeds; visited states / probes):", "", markdown_table(vt), "",
             "avg_cost per product-period, every seed:", "",
             markdown_table(per_seed, {p: ".4f" for p in policies}), "",
             f"![violation map: plain, penalized and structured policies over a wide slice]({figure})", ""]
    return "\n".join(lines)


def overview(csv: pd.DataFrame, spent: pd.DataFrame) -> str:
    """The table over every problem in ``benchmarks/results/sipn.csv`` and the seeds' plot."""
    parts = []
    for name in dict.fromkeys(csv.problem):
        s = public(summarize(csv[csv.problem == name], spent[spent.problem == name]))
        s.insert(0, "problem", name)
        parts.append(s)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return "\n".join(["## Every problem", "", "Rendered from `benchmarks/results/sipn.csv` (every seed, every "
                      "scenario) and `benchmarks/results/sipn_time.csv`; each problem's section below says how "
                      "it was made.", "", markdown_table(table), "",
                      "![cost against violation rate, every seed](figures/sipn_seeds.png)", ""])


def write_section(path, name: str, body: str) -> None:
    """Replace (or append) the block ``sipn:<name>`` of ``path``; the prose around the
    blocks is the file's own (docs/sipn.md: its header, then the sections, then notes)."""
    write_block(path, f"sipn:{name}", body, header=TITLE)
