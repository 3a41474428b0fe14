"""Training wall time to within 1% and 0.3% of the exact optimum, for the CNN and the MLP policy.

    python -m benchmarks.time_to_quality [kinds=cnn,mlp] [seeds=0,1,2] [threads=2] [budget_s=120]
        [targets=1.0,0.3] [eval_every_s=5] [test_products=8000] [test_periods=1000] [batch=1024]
        [lr=0.003] [docs=true]

Lost sales, p = 9, L = 4, Poisson(5), h = 1 (Zipkin's grid; exact optimum 6.8359 from
``pipeline/core/dp.py``, ``benchmarks/results/lost_sales.csv``), as a population of identical
products. One process, no Ray, ``threads`` torch threads: ``pipeline.core.training.train_epoch``
on batches of ``batch`` training products drawn at random, each step on a new random window
of the experiment's horizon (100 periods, 20 of warm-up), Adam at the project's learning
rate, decaying (cosine, to 5%) over ``budget_s`` seconds of training, which is also when a
run stops. Settings: the project's defaults and the experiment's, with 20,000 training
products of 600 periods (fresh synthetic paths cost nothing).

Every ``eval_every_s`` seconds of training the policy (orders rounded) is scored on
``test_products`` held-out paths of ``test_periods`` periods (after 50 of warm-up), and so
is the exact DP policy, once, on the same paths. Two gaps per evaluation:

- the paired gap to the DP policy, ``pipeline.core.evaluation.paired_gap`` (the ratio of the
  two total costs, with its standard error over the paths): the DP policy's expected cost is
  the exact optimum, so this estimates the gap to the optimum with the paths' noise
  cancelled; the run checks that its standard error is at most 0.05 points;
- the plain gap of the learned cost to the exact optimum (the DP policy's own plain gap on
  the same paths is reported beside it: the paths' noise).

A target counts as reached at the first evaluation where the paired gap is within it. The clock
runs during training only (data generation included); the evaluations and the DP solve
are measurements, not training, and stop it. Writes ``benchmarks/results/time_to_quality.csv``
(every evaluation of every run), the figure ``docs/figures/time_to_quality.png`` and the
"Time to quality" block of ``docs/performance.md``.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import replace

import pandas as pd
import torch

from benchmarks import key_values, record_run, run_script
from benchmarks.step_speed import policy_overrides
from pipeline.config import PROJECT_ROOT, ConfigError, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

OPTIMUM = 6.835941904994463  # exact DP, p = 9, L = 4 (benchmarks/results/lost_sales.csv)
MAX_SE = 0.05  # points: the largest standard error of the paired gap this benchmark accepts
DEFAULTS = {"kinds": "cnn,mlp", "seeds": "0,1,2", "threads": 2, "budget_s": 120.0, "targets": "1.0,0.3",
            "eval_every_s": 5.0, "test_products": 8000, "test_periods": 1000, "batch": 1024, "lr": 0.003,
            "round": False, "docs": True}
CONFIG = ["experiment=zipkin_p19_L4", "data.shortage_cost_range=[9.0,9.0]", "data.num_products=20000",
          "data.periods=600"]
TEST_START, TEST_WARMUP = 100, 50
RESULTS = DEFAULT_RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "time_to_quality.csv"
FIGURE = PROJECT_ROOT / "docs" / "figures" / "time_to_quality.png"
DOC = PROJECT_ROOT / "docs" / "performance.md"


def options(args: list[str]) -> dict:
    opts = key_values(args, DEFAULTS)
    try:
        opts["kinds"] = [k for k in opts["kinds"].split(",")]
        opts["seeds"] = [int(s) for s in opts["seeds"].split(",")]
        opts["targets"] = sorted((float(t) for t in opts["targets"].split(",")), reverse=True)
    except ValueError:
        raise ConfigError("seeds and targets take comma-separated numbers") from None
    for kind in opts["kinds"]:
        policy_overrides(kind)  # a ConfigError for an unknown kind
    return opts


def test_paths(opts: dict, seed: int = 10_007):
    """The held-out products (their own seed, never trained on) and the DP policy's cost on
    each path [N]."""
    from pipeline.core.baselines import dp_policy
    from pipeline.core.batch import batch_from_columns
    from pipeline.core.evaluation import product_costs
    from pipeline.core.problems import get_problem
    from pipeline.data.synthetic import synthetic_population

    cfg = load_config(CONFIG + [f"data.num_products={opts['test_products']}",
                                f"data.periods={TEST_START + TEST_WARMUP + opts['test_periods']}"])
    problem = get_problem("lost_sales", {})
    test = batch_from_columns(synthetic_population(cfg.data, seed))
    width = problem.state_width(4)
    dp_cost = product_costs(problem, dp_policy(problem, test, "cost"), test, TEST_START,
                            test.periods - TEST_START, TEST_WARMUP, width, round_actions=True)
    return test, dp_cost


def run(opts: dict, kind: str, seed: int, test, dp_cost: torch.Tensor, log) -> pd.DataFrame:
    """One training run of ``budget_s`` seconds; its evaluations."""
    from pipeline.core.batch import batch_from_columns
    from pipeline.core.evaluation import paired_gap, product_costs
    from pipeline.core.policy import build_policy
    from pipeline.core.problems import get_problem
    from pipeline.core.training import TrainSpec, train_epoch
    from pipeline.data.synthetic import synthetic_population

    torch.set_num_threads(opts["threads"])
    cfg = load_config(CONFIG + [*policy_overrides(kind), f"seed={seed}",
                                f"train.round_actions={str(opts['round']).lower()}"])
    problem = get_problem("lost_sales", {})
    width = problem.state_width(4)
    trained = 0.0  # seconds of training so far; the clock runs while a segment of training runs
    segment = time.perf_counter()
    train = batch_from_columns(synthetic_population(cfg.data, cfg.seed))
    torch.manual_seed(seed)
    policy = build_policy(cfg.policy, width, problem)
    optimizer = torch.optim.Adam(policy.parameters(), lr=opts["lr"])
    generator = torch.Generator().manual_seed(seed)
    # one step per batch; the learning rate decays over the budget (one "epoch")
    spec = replace(TrainSpec.from_config(cfg, problem, width), windows_per_batch=1, lr=opts["lr"], epochs=1)

    def clock() -> float:
        return trained + time.perf_counter() - segment

    def batches():  # random training products, until the next evaluation or the end of the budget
        stop = min(opts["budget_s"], (int(clock() / opts["eval_every_s"]) + 1) * opts["eval_every_s"])
        while clock() < stop:
            yield train.select(torch.randint(train.size, (opts["batch"],), generator=generator))

    rows, steps = [], 0
    while clock() < opts["budget_s"]:
        stats = train_epoch(policy, optimizer, problem, batches(), spec, generator,
                            lambda _: min(1.0, clock() / opts["budget_s"]))
        steps += stats.steps
        trained = clock()
        cost = product_costs(problem, policy, test, TEST_START, test.periods - TEST_START, TEST_WARMUP, width,
                             round_actions=True)
        gap, se = paired_gap(cost, dp_cost)
        rows.append({"kind": kind, "seed": seed, "seconds": trained, "steps": steps,
                     "product_periods": steps * opts["batch"] * spec.horizon, "avg_cost": float(cost.mean()),
                     "gap_to_dp_policy_pct": gap, "gap_se_pct": se,
                     "gap_to_optimum_pct": 100 * (float(cost.mean()) / OPTIMUM - 1)})
        log.info(f"{kind} seed {seed}: {trained:6.1f}s  step {steps:5d}  cost {cost.mean():.4f}  "
                 f"gap to the DP policy {gap:+.2f}% (se {se:.3f})  to the optimum {rows[-1]['gap_to_optimum_pct']:+.2f}%")
        segment = time.perf_counter()
    return pd.DataFrame(rows)


def reached(curve: pd.DataFrame, target: float) -> float | None:
    """Seconds of training at the first evaluation whose paired gap is within ``target``."""
    hit = curve[curve.gap_to_dp_policy_pct <= target]
    return float(hit.seconds.iloc[0]) if len(hit) else None


def summary(curves: pd.DataFrame, targets: list[float]) -> pd.DataFrame:
    rows = []
    for (kind, seed), c in curves.groupby(["kind", "seed"], sort=False):
        last = c.iloc[-1]
        rows.append({"kind": kind, "seed": seed, **{f"to {t:g}%": reached(c, t) for t in targets},
                     "steps": int(last.steps), "product-periods/s": last.product_periods / last.seconds,
                     "final gap to the DP policy": last.gap_to_dp_policy_pct, "se": last.gap_se_pct,
                     "final gap to the optimum": last.gap_to_optimum_pct, "largest se": c.gap_se_pct.max()})
    return pd.DataFrame(rows)


def figure(curves: pd.DataFrame, targets: list[float]):
    from matplotlib.ticker import ScalarFormatter

    from pipeline.reporting.plots import plt

    fig, axes = plt.subplots(1, curves.kind.nunique(), figsize=(6.4 * curves.kind.nunique(), 3.8), squeeze=False)
    for ax, (kind, runs) in zip(axes[0], curves.groupby("kind", sort=False)):
        for seed, c in runs.groupby("seed"):
            ax.plot(c.seconds, c.gap_to_dp_policy_pct, marker=".", label=f"seed {seed}")
        for t in targets:
            ax.axhline(t, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel("gap to the DP policy on the test paths (%)")
        ax.set_title(f"{kind} policy, lost sales p = 9, L = 4", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(args: list[str]) -> int:
    opts = options(args)
    log = logs.get("ttq")
    load = os.getloadavg()[0]
    test, dp_cost = test_paths(opts)
    dp_plain = 100 * (float(dp_cost.mean()) / OPTIMUM - 1)
    log.info(f"{test.size} test paths x {opts['test_periods']} periods; the DP policy's cost on them "
             f"{float(dp_cost.mean()):.4f} ({dp_plain:+.2f}% to the exact optimum {OPTIMUM:.4f})")
    curves = pd.concat([run(opts, kind, seed, test, dp_cost, log) for kind in opts["kinds"] for seed in opts["seeds"]],
                       ignore_index=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    curves.to_csv(RESULTS, index=False)
    if RESULTS == DEFAULT_RESULTS:
        record_run("time_to_quality", "python -m benchmarks.time_to_quality " + " ".join(args), load)
    table = summary(curves, opts["targets"])
    if table["largest se"].max() > MAX_SE:
        log.info(f"warning: a standard error reached {table['largest se'].max():.3f} points, above {MAX_SE}: "
                 "raise test_products")
    if opts["docs"]:
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        figure(curves, opts["targets"]).savefig(FIGURE, dpi=110)
        lines = report(opts, args, table, dp_cost, dp_plain, load)
        write_block(DOC, "perf:time_to_quality", "\n".join(lines), header="# Performance\n")
        log.info("\n".join(lines))
    return 0


def report(opts: dict, args: list[str], table: pd.DataFrame, dp_cost, dp_plain: float, load: float) -> list[str]:
    def seconds(v):
        return "not reached" if v is None or pd.isna(v) else f"{v:.0f} s"

    shown = table.copy()
    for t in opts["targets"]:
        shown[f"to {t:g}%"] = [seconds(v) for v in shown[f"to {t:g}%"]]
    command = "python -m benchmarks.time_to_quality" + "".join(f" {a}" for a in args)
    worst = {t: table[f"to {t:g}%"] for t in opts["targets"]}
    verdict = []
    for kind in opts["kinds"]:
        k = table.kind == kind
        parts = [f"within {t:g}%: worst seed {seconds(None if w[k].isna().any() else w[k].max())}"
                 for t, w in worst.items()]
        verdict.append(f"{kind}: {', '.join(parts)}")
    return ["## Time to quality", "",
            f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
            f"{opts['threads']} threads, torch {torch.__version__}, load average at start {load:.2f}). Lost sales "
            f"p = 9, L = 4, Poisson(5), h = 1. Training: batches of {opts['batch']} products x 100 periods, Adam at "
            f"lr {opts['lr']} decaying over {opts['budget_s']:.0f} s; the clock counts training only. Test: "
            f"{len(dp_cost):,} held-out paths x {opts['test_periods']} scored periods, orders rounded; the exact DP "
            f"policy costs {float(dp_cost.mean()):.4f} on them ({dp_plain:+.2f}% to the exact optimum "
            f"{OPTIMUM:.4f}: the paths' noise). The paired gap to the DP policy (the ratio of the learned and the DP "
            "policy's total costs on the same paths) estimates the gap to the exact optimum with that noise "
            "cancelled; a target counts at the first evaluation (every "
            f"{opts['eval_every_s']:g} s of training) where it is within the target.", "",
            "; ".join(verdict) + ".", "",
            markdown_table(shown, {"product-periods/s": ",.0f", "final gap to the DP policy": "+.2f", "se": ".3f",
                                   "final gap to the optimum": "+.2f", "largest se": ".3f"}), "",
            "Gaps in percent; se: the standard error of the paired gap, in points. Curves: "
            "`benchmarks/results/time_to_quality.csv`, and the figure below.", "",
            "![time to quality](figures/time_to_quality.png)"]


if __name__ == "__main__":
    run_script(main)
