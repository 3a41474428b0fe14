"""What the structure penalty costs per DirectBackprop step.

    python -m benchmarks.penalty_step [--steps 40] [--threads 1]

For every problem (its conf/problem defaults; lost sales with L = 5 as in Figure 1) and
both policy kinds, the median wall time of ``pipeline.core.training.train_step`` (rollout, loss,
backward, Adam) on 256 products x 60 periods, without the penalty and with every default
property weighted (Jacobian at one period, half of it at probe states), the two
interleaved step by step. Writes
``benchmarks/results/penalty_step.csv`` (``benchmark,config,value,unit``) and the
"Cost of the penalty" section of ``docs/sipn.md``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import pandas as pd
import torch

from pipeline.config import PROJECT_ROOT, load_config
from pipeline.core.penalty import penalty_properties
from pipeline.core.batch import batch_from_columns
from pipeline.data.synthetic import synthetic_population
from pipeline.core.training import TrainSpec, train_step
from pipeline.core.policy import build_policy
from pipeline.core.problems import PROBLEMS, get_problem
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table

# every registered problem at its conf/problem defaults, but lost sales with L = 5 (Figure 1)
SETTINGS = {"lost_sales": ["data.lead_time_range=[5,5]"]}
CASES = {name: SETTINGS.get(name, []) for name in PROBLEMS}
BATCH, HORIZON = 256, 60


def setup(args: list[str]):
    """A policy, its optimiser and a batch for the config of ``args``."""
    cfg = load_config(args)
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])
    batch = batch_from_columns(synthetic_population(cfg.data, cfg.seed))
    torch.manual_seed(0)
    policy = build_policy(cfg.policy, width, problem)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    return cfg, problem, width, batch, policy, optimizer


def step_seconds(cases: list[list[str]], steps: int) -> list[float]:
    """Median seconds per step of each config, the configs' steps interleaved so that a
    slow spell of the machine falls on all of them alike; 3 warm-up steps each first."""
    runs = [setup(args) for args in cases]
    times = [[] for _ in runs]
    specs = [TrainSpec.from_config(cfg, problem, width) for cfg, problem, width, *_ in runs]
    for i in range(steps + 3):
        for k, (cfg, problem, width, batch, policy, optimizer) in enumerate(runs):
            tic = time.perf_counter()
            train_step(policy, optimizer, problem, batch, cfg.train.history + i % 20, specs[k])
            if i >= 3:
                times[k].append(time.perf_counter() - tic)
    return [statistics.median(t) for t in times]


def penalty_cost(name: str, kind: str, steps: int, batch: int = BATCH,
                 horizon: int = HORIZON) -> tuple[float, float, int, str]:
    """(plain, penalized) median seconds per step of problem ``name`` (``CASES`` settings)
    with policy ``kind``, the number of properties penalized, and the config's label."""
    base = [f"problem={name}", f"policy.kind={kind}", "policy.structure=free", f"data.num_products={batch}",
            f"train.horizon={horizon}", "train.warmup=0", *CASES[name]]
    plain, penalized = step_seconds([base + ["penalty.weights=[0.0]"], base + ["penalty.weights=[1.0]"]], steps)
    cfg = load_config(base)
    problem = get_problem(name, cfg.problem.params)
    n_props = len(penalty_properties(problem, problem.state_width(cfg.data.lead_time_range[1]), []))
    return plain, penalized, n_props, f"{name} {kind} batch={batch} horizon={horizon} properties={n_props}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    rows, table = [], []
    log = logs.get("penalty_step")
    for name in CASES:
        for kind in ("mlp", "cnn"):
            plain, penalized, n_props, config = penalty_cost(name, kind, a.steps)
            overhead = 100 * (penalized - plain) / plain
            rows += [("step_plain", config, 1000 * plain, "ms"), ("step_penalized", config, 1000 * penalized, "ms"),
                     ("penalty_overhead", config, overhead, "%")]
            table.append([name, kind, n_props, 1000 * plain, 1000 * penalized, overhead])
            log.info(f"{name} {kind}: {n_props} properties, plain {1000 * plain:.1f} ms, penalized "
                     f"{1000 * penalized:.1f} ms, overhead {overhead:+.0f}%")
    out = PROJECT_ROOT / "benchmarks" / "results" / "penalty_step.csv"
    pd.DataFrame(rows, columns=["benchmark", "config", "value", "unit"]).to_csv(out, index=False)
    from pipeline.studies.sipn_study import write_section

    body = "\n".join([
        "## Cost of the penalty per step", "",
        f"Command: `python -m benchmarks.penalty_step --steps {a.steps} --threads {a.threads}` "
        f"({platform.processor() or platform.machine()}, {a.threads} thread(s), torch {torch.__version__}). "
        f"Median wall time of one DirectBackprop step (rollout of {HORIZON} periods for {BATCH} "
        "products, loss, backward, Adam), without and with the penalty (every default property, "
        "one Jacobian per action at one period, half the states probes). CSV: "
        "`benchmarks/results/penalty_step.csv`.", "",
        markdown_table(pd.DataFrame(table, columns=["problem", "policy", "properties", "plain ms", "penalized ms",
                                                     "overhead"]),
                       {"plain ms": ".1f", "penalized ms": ".1f", "overhead": lambda v: f"{v:+.0f}%"})])
    write_section(PROJECT_ROOT / "docs" / "sipn.md", "overhead", body)
    log.info(f"wrote {out} and docs/sipn.md")


if __name__ == "__main__":
    main()
