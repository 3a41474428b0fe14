"""Wall time from start to within 1% of the DP optimum.

    python -m benchmarks.time_to_quality [threads=2] [kind=mlp] [max_seconds=1200] [target_pct=1.0]

Lost sales, p = 9, L = 4, Poisson(5), h = 1 (Zipkin's grid; exact optimum 6.8359 from
``pipeline/core/dp.py``, ``benchmarks/results/lost_sales.csv``), as a population of identical
products. One process, no Ray: ``pipeline.core.training.train_epoch`` on batches of
training products drawn at random, each step on a new random window, the learning rate
decaying (cosine) over ``max_seconds``. Every ``eval_every`` steps the policy (orders rounded) is evaluated on
held-out products' paths, as is the exact DP policy on the same paths; the clock stops
when the learned cost is within ``target_pct`` of the DP policy's on those paths. The
clock includes data generation and the evaluations, not the DP solve (a reference, not
part of training). Writes ``benchmarks/results/time_to_quality.csv`` (the curve) and the
"Time to quality" block of ``docs/performance.md``.
"""
from __future__ import annotations

import itertools
import platform
import time
from dataclasses import replace

import pandas as pd
import torch

from benchmarks import key_values, run_script
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import write_block

OPTIMUM = 6.835941904994463  # exact DP, p = 9, L = 4 (benchmarks/results/lost_sales.csv)
DEFAULTS = {"threads": 2, "kind": "mlp", "max_seconds": 1200.0, "target_pct": 1.0, "eval_every": 25,
            "batch": 1024, "lr": 0.003, "seed": 0}
CONFIG = ["experiment=zipkin_p19_L4", "data.shortage_cost_range=[9.0,9.0]", "data.num_products=3000",
          "data.periods=600", "eval.start=100", "eval.warmup=20"]


def options(args: list[str]) -> dict:
    return key_values(args, DEFAULTS)


def run(opts: dict) -> tuple[pd.DataFrame, dict]:
    from pipeline.core.baselines import dp_policy
    from pipeline.core.batch import batch_from_columns
    from pipeline.data.synthetic import split_products, synthetic_population
    from pipeline.core.training import TrainSpec, train_epoch
    from pipeline.core.evaluation import policy_metrics
    from pipeline.core.policy import build_policy
    from pipeline.core.problems import get_problem

    torch.set_num_threads(opts["threads"])
    hidden = "[32,32,32]" if opts["kind"] == "mlp" else "[32,32]"
    cfg = load_config(CONFIG + [f"policy.kind={opts['kind']}", f"policy.hidden={hidden}", f"seed={opts['seed']}"])
    problem = get_problem("lost_sales", {})
    width = problem.state_width(4)
    e, t = cfg.eval, cfg.train

    started = time.perf_counter()
    population = batch_from_columns(synthetic_population(cfg.data, cfg.seed))
    split = split_products(population.size, cfg.data.valid_fraction, cfg.data.test_fraction, cfg.seed)
    train, test = population.select(split["train"]), population.select(split["test"])
    paused = time.perf_counter()
    reference = policy_metrics(problem, dp_policy(problem, test, "cost"), test, e.start, test.periods - e.start,
                               e.warmup, width, round_actions=True)["avg_cost"]
    started += time.perf_counter() - paused  # the DP solve is a reference, not part of training

    torch.manual_seed(opts["seed"])
    policy = build_policy(cfg.policy, width, problem)
    optimizer = torch.optim.Adam(policy.parameters(), lr=opts["lr"])
    generator = torch.Generator().manual_seed(opts["seed"])
    # one step per batch, the learning rate decaying over max_seconds (one "epoch")
    spec = replace(TrainSpec.from_config(cfg, problem, width), windows_per_batch=1, lr=opts["lr"], epochs=1)

    def batches():  # random training products, until the time is up
        while time.perf_counter() - started < opts["max_seconds"]:
            yield train.select(torch.randint(train.size, (opts["batch"],), generator=generator))

    def progress(_step: int) -> float:
        return min(1.0, (time.perf_counter() - started) / opts["max_seconds"])

    log = logs.get("ttq")
    curve, step, reached, stream = [], 0, None, batches()
    log.info(f"lost sales p=9 L=4, {opts['kind']} policy, {opts['threads']} threads; DP policy on the "
             f"test paths {reference:.4f} (exact optimum {OPTIMUM:.4f}); target within {opts['target_pct']}%")
    while reached is None:
        stats = train_epoch(policy, optimizer, problem, itertools.islice(stream, opts["eval_every"]), spec,
                            generator, progress)
        step += stats.steps
        if stats.steps == opts["eval_every"]:  # else the time was up
            cost = policy_metrics(problem, policy, test, e.start, test.periods - e.start, e.warmup, width,
                                  round_actions=True)["avg_cost"]
            wall = time.perf_counter() - started
            gap = 100 * (cost / reference - 1)
            curve.append({"seconds": wall, "steps": step, "avg_cost": cost, "gap_to_dp_policy_pct": gap,
                          "gap_to_optimum_pct": 100 * (cost / OPTIMUM - 1)})
            log.info(f"{wall:7.1f}s  step {step:5d}  cost {cost:.4f}  gap {gap:+.2f}%")
            if gap <= opts["target_pct"]:
                reached = wall
        else:
            break
    info = {"reference": reference, "reached_seconds": reached, "steps": step,
            "product_periods": step * opts["batch"] * t.horizon, "test_products": test.size,
            "test_periods": test.periods - e.start - e.warmup, "horizon": t.horizon}
    return pd.DataFrame(curve), info


def main(args: list[str]) -> int:
    opts = options(args)
    curve, info = run(opts)
    results = PROJECT_ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    curve.to_csv(results / "time_to_quality.csv", index=False)
    command = "python -m benchmarks.time_to_quality " + " ".join(f"{k}={v}" for k, v in opts.items())
    done = (f"**{info['reached_seconds']:.0f} s** ({curve.steps.iloc[-1]} steps)" if info["reached_seconds"]
            else f"**not reached** in {opts['max_seconds']:.0f} s (best gap {curve.gap_to_dp_policy_pct.min():+.2f}%)")
    last = curve.iloc[-1] if len(curve) else None
    lines = ["## Time to quality", "",
             f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}). Lost sales p = 9, L = 4, Poisson(5), h = 1: {opts['kind']} policy, "
             f"batches of {opts['batch']} products x {info['horizon']} periods, evaluated every "
             f"{opts['eval_every']} steps on {info['test_products']} held-out products x {info['test_periods']} "
             f"periods (orders rounded) against the exact DP policy on the same paths "
             f"({info['reference']:.4f}; exact optimum {OPTIMUM:.4f}).", "",
             f"Wall time to within {opts['target_pct']}% of the DP policy: {done}; last evaluation "
             + (f"{last.avg_cost:.4f}, {last.gap_to_optimum_pct:+.2f}% to the exact optimum." if last is not None
                else "none."),
             "", "Curve: `benchmarks/results/time_to_quality.csv`."]
    write_block(PROJECT_ROOT / "docs" / "performance.md", "perf:time_to_quality", "\n".join(lines),
                header="# Performance\n")
    logs.get("").info("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_script(main)
