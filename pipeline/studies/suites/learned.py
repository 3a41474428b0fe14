"""The learned row of a benchmark suite: one network trained through the normal training path
(``training_run.train``: Ray Data, Ray Train, MLflow) on a population whose products span the
suite's instances, each carrying its instance's parameters as data; then, instance by instance,
the network and the exact DP policy on the same held-out demand paths (docs/benchmarks.md,
Learned rows).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.training_run import TrainResult, train
from pipeline.config import Config, portable, resolve_path, to_yaml, validate
from pipeline.core import dp
from pipeline.core.batch import ECONOMICS, ProductBatch, batch_from_columns
from pipeline.core.demand import sample_demand
from pipeline.core.evaluation import paired_gap, product_costs
from pipeline.core.problems import get_problem
from pipeline.core.rollout import action_matrix
from pipeline.data.parquet import SPLITS, read_products, to_arrow, write_shards
from pipeline.data.synthetic import split_products
from pipeline.reporting import plots
from pipeline.reporting.progress import eta
from pipeline.studies.suites.instances import DPInstance, instance_key

ID_STRIDE = 1_000_000  # product_id = instance index x ID_STRIDE + k: a product's instance is in its id


@dataclass
class Cell:
    """One instance of the suite as the learned row sees it: its exact DP inputs and policy."""
    instance: dict
    case: DPInstance
    policy: dp.TablePolicy

    @property
    def width(self) -> int:
        return self.case.problem.state_width(int(self.case.product.lead_time[0]))


def population_params(problems: list) -> tuple[dict, list[str]]:
    """The population's ``problem.params`` (a structural parameter at its largest value, any
    other at the first instance's) and the parameters that differ between instances: those
    every product carries as a column."""
    fields = [f.name for f in dataclasses.fields(problems[0])]
    values = {f: [getattr(p, f) for p in problems] for f in fields}
    varying = [f for f in fields if len(set(values[f])) > 1]
    params = {f: max(values[f]) if f in problems[0].structural else values[f][0] for f in fields}
    return params, varying


def population(cases: list[DPInstance], per_instance: int, periods: int, rng: np.random.Generator,
               first_instance: int = 0) -> dict[str, np.ndarray]:
    """``per_instance`` products of each case, demand drawn from the case's law: the columns of
    a product table (id, law, lead time, economics, every problem parameter, demand). Every
    parameter is a column, so that a product plays its own instance in any population's problem."""
    parts = []
    for i, case in enumerate(cases, start=first_instance):
        one, n = case.product, per_instance
        law = {"true_dist": np.repeat(one.true_dist[:1], n), "true_mean": np.full(n, float(one.true_mean[0])),
               "true_shape": np.full(n, float(one.true_shape[0]))}
        parts.append({"product_id": i * ID_STRIDE + np.arange(n, dtype=np.int64), **law,
                      "lead_time": np.full(n, int(one.lead_time[0]), dtype=np.int64),
                      **{k: np.full(n, float(getattr(one, k)[0])) for k in ECONOMICS},
                      **{f.name: np.full(n, getattr(case.problem, f.name)) for f in dataclasses.fields(case.problem)},
                      "demand": sample_demand(rng, law["true_dist"], law["true_mean"], law["true_shape"], periods)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def training_config(cfg: Config, suite, cases: list[DPInstance]) -> Config:
    """``cfg`` (the job's config with the suite's ``conf/learned/<suite>.yaml``) for the
    suite's network: its problem with the population's parameters, the lead times and discount
    of the instances, the run named after the suite and a hash of the rest, so that a run of
    the same settings resumes and any other starts afresh."""
    c = dataclasses.replace(cfg)
    params, _ = population_params([case.problem for case in cases])
    lead_times = [int(case.product.lead_time[0]) for case in cases]
    discounts = {case.discount for case in cases}
    if len(discounts) > 1:
        raise ValueError(f"suite {suite.name}: instances with different discounts {sorted(discounts)} cannot share a network")
    c.problem = dataclasses.replace(cfg.problem, name=suite.problem, params=params, discount=discounts.pop(),
                                    objective="cost")
    c.data = dataclasses.replace(cfg.data, path=None, lead_time_range=[min(lead_times), max(lead_times)])
    validate(c)
    key = hashlib.sha256(json.dumps({"suite": suite.name, "instances": list(map(instance_key, suite.instances)),
                                     "config": to_yaml(portable(c))}).encode()).hexdigest()[:8]
    c.name = f"benchmark-{suite.name}-learned-{key}"
    return c


def write_population(cfg: Config, cases: list[DPInstance], folder: Path) -> dict[str, Path]:
    """The train / valid / test Parquet folders of the suite's population (``data.num_products``
    products spread evenly over the instances, rows shuffled so that every batch mixes
    them), written once per config under ``folder``."""
    splits = {s: folder / s for s in SPLITS}
    if (folder / "_SUCCESS").exists():
        return splits
    shutil.rmtree(folder, ignore_errors=True)
    d = cfg.data
    rng = np.random.default_rng(cfg.seed)
    cols = population(cases, max(1, d.num_products // len(cases)), d.periods, rng)
    index = split_products(len(cols["product_id"]), d.valid_fraction, d.test_fraction, cfg.seed)
    for name in SPLITS:
        write_shards(to_arrow(cols, rng.permutation(index[name])), splits[name], d.shard_rows)
    (folder / "_SUCCESS").touch()
    return splits


def embed(state: Tensor, names: list[str], into: list[str]) -> Tensor:
    """An instance's states [N, len(names)] in the population's layout ``into`` (entries by
    name; the rest 0)."""
    out = state.new_zeros(state.shape[0], len(into))
    for j, name in enumerate(names):
        out[:, into.index(name)] = state[:, j]
    return out


def evaluation_paths(cell: Cell, products: int, periods: int, rng: np.random.Generator,
                     generator: torch.Generator) -> tuple[ProductBatch, Tensor | None]:
    """Held-out products of the cell's instance with ``periods`` of demand, and their start
    states in the instance's layout: drawn from the criterion's start law where it has one,
    else None (an empty system)."""
    batch = batch_from_columns(population([cell.case], products, periods, rng))
    if cell.case.initial is None:
        return batch, None
    index = torch.multinomial(cell.case.initial.double(), products, replacement=True, generator=generator)
    return batch, cell.case.space.states()[index].to(batch.demand.dtype)


def evaluate_cell(policy, problem, width: int, cell: Cell, b, seed: int) -> dict[str, float]:
    """The network (``problem``: the population's, ``width`` its state) and the cell's DP policy
    on the same held-out paths, orders rounded: batches of ``b.eval_products`` products with
    ``b.eval_history`` periods of history and ``b.eval_periods`` scored ones (after
    ``b.eval_warmup`` from an empty system, or discounted from the criterion's start), until
    the paired gap's standard error is at most ``b.max_se_pct`` points or ``b.max_eval_products``
    products are used."""
    case, discount = cell.case, cell.case.discount
    warmup = 0 if discount < 1 else b.eval_warmup
    horizon = warmup + b.eval_periods
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    names, into = case.problem.state_names(cell.width), problem.state_names(width)
    learned, reference = [], []
    while True:
        batch, start = evaluation_paths(cell, b.eval_products, b.eval_history + horizon, rng, generator)
        wide = None if start is None else embed(start, names, into)
        learned.append(product_costs(problem, policy, batch, b.eval_history, horizon, warmup, width, True, wide,
                                     discount))
        reference.append(product_costs(case.problem, cell.policy, batch, b.eval_history, horizon, warmup,
                                       cell.width, True, start, discount))
        gap, se = paired_gap(torch.cat(learned), torch.cat(reference))
        paths = sum(map(len, learned))
        if se <= b.max_se_pct or paths >= b.max_eval_products:
            return {"gap_pct": gap, "gap_se_pct": se, "sim_cost": float(torch.cat(learned).mean()),
                    "sim_dp_cost": float(torch.cat(reference).mean()), "paths": paths, "periods": b.eval_periods}


@torch.no_grad()
def validation_reference(cells: list[Cell], problem, cfg: Config, splits: dict[str, Path]) -> float:
    """The DP policies' average cost on the validation products' paths, as the training run's
    validation scores its network (``eval.start`` on, after ``eval.warmup``, each system's own
    start): the reference of the learning curve."""
    valid, e = read_products(splits["valid"]), cfg.eval
    instance = torch.as_tensor(valid.product_id // ID_STRIDE)
    total, count = 0.0, 0
    for i, cell in enumerate(cells):
        rows = (instance == i).nonzero()[:, 0]
        if len(rows):
            cost = product_costs(cell.case.problem, cell.policy, valid.select(rows), e.start,
                                 valid.periods - e.start, e.warmup, cell.width, False)
            total, count = total + float(cost.sum()), count + len(rows)
    return total / count


def learning_curve(result: TrainResult, reference: float) -> pd.DataFrame:
    """The network's validation gap to the DP policies by training wall time, one row per epoch."""
    tracker = result.tracker
    seconds = np.cumsum([v for _, v in tracker.metric_history("train/epoch_seconds")])
    costs = [v for _, v in tracker.metric_history("valid/avg_cost")]
    n = min(len(seconds), len(costs))
    return pd.DataFrame({"epoch": np.arange(1, n + 1), "train_seconds": seconds[:n],
                         "valid_cost": costs[:n], "valid_dp_cost": reference,
                         "valid_gap_pct": [100 * (c / reference - 1) for c in costs[:n]]})


def run(cfg: Config, suite, exact: dict[str, float], progress: Callable[[str], None] = lambda line: None,
        figures: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Train the suite's network and evaluate it on every instance. ``exact``: the DP's exact
    cost by instance key (``avg_cost`` of a row is that times 1 + the paired gap). Returns the
    ``learned`` rows and what the report needs: the times, the learning curve, the figures."""
    b, timing = cfg.benchmark, {}
    started = time.time()
    cases = [suite.dp_instance(inst) for inst in suite.instances]
    tcfg = training_config(cfg, suite, cases)
    out_dir = resolve_path(tcfg.output_dir)
    splits = write_population(tcfg, cases, out_dir / "data" / tcfg.name)
    progress(f"[benchmark {suite.name}] learned: {tcfg.data.num_products:,} products over {len(cases)} instances, "
             f"run {tcfg.name}")
    result = train(tcfg, splits=splits, evaluate=False, tags={"benchmark_suite": suite.name})
    timing["train_seconds"] = time.time() - started
    policy, _, _ = ckpt.load_policy(result.best_checkpoint)
    policy.eval()
    problem = get_problem(tcfg.problem.name, tcfg.problem.params)
    width = problem.state_width(tcfg.data.lead_time_range[1])

    tic = time.time()
    with dp.one_thread():
        cells = [Cell(inst, case, dp.optimal_policy(case.problem, case.product, discount=case.discount))
                 for inst, case in zip(suite.instances, cases)]
    timing["dp_seconds"] = time.time() - tic
    curve = learning_curve(result, validation_reference(cells, problem, tcfg, splits))

    tic, rows = time.time(), []
    for i, cell in enumerate(cells):
        key = instance_key(cell.instance)
        m = evaluate_cell(policy, problem, width, cell, b, tcfg.seed + 104729 * (i + 1))
        rows.append({"suite": suite.name, "problem": suite.problem, "instance": key, "policy": "learned",
                     "avg_cost": exact[key] * (1 + m["gap_pct"] / 100), **m})
        progress(f"[benchmark {suite.name}] learned {i + 1}/{len(cells)} {key}: gap {m['gap_pct']:+.3f}% "
                 f"(se {m['gap_se_pct']:.3f}, {m['paths']:,} paths)  ({eta(i + 1, len(cells), tic, 'instances')})")
    timing["eval_seconds"] = time.time() - tic
    table = pd.DataFrame(rows)
    tracker = result.tracker
    tracker.log_table(table, f"benchmark_{suite.name}_learned")
    tracker.log_table(curve, f"benchmark_{suite.name}_learning_curve")
    tracker.log_metrics({**{f"benchmark/{r.instance.replace('=', '').replace(';', '_')}/gap_pct": r.gap_pct
                            for r in table.itertuples()},
                         "benchmark/mean_gap_pct": float(table.gap_pct.mean()),
                         "benchmark/worst_gap_pct": float(table.gap_pct.max()), **timing})
    pictures = {"learning": plots.gap_curve(curve, f"{suite.name}: the network's validation gap to the DP policies"),
                "policy": policy_figure(policy, problem, width, cells[suite_picture(suite)], b)}
    for name, fig in pictures.items():
        tracker.log_figure(fig, f"plots/benchmark_{suite.name}_{name}.png")
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
            fig.savefig(figures / f"benchmark-{suite.name}-{name}.png", dpi=110)
    timing["total_seconds"] = time.time() - started
    return table, {"timing": timing, "curve": curve, "run_id": result.run_id, "run": tcfg.name,
                   "products": tcfg.data.num_products}


def suite_picture(suite) -> int:
    """The index of the instance whose policy the report draws: the suite's ``picture`` where
    it has that instance, else its first."""
    return list(suite.instances).index(suite.picture) if suite.picture in suite.instances else 0


@torch.no_grad()
def policy_figure(policy, problem, width: int, cell: Cell, b):
    """The network's actions (rounded) against the DP policy's over a slice of the instance's
    state space: the first two entries over the DP grid, the rest 0 (one entry: a line)."""
    rng = np.random.default_rng(0)
    batch, _ = evaluation_paths(cell, 1, b.eval_history + 1, rng, torch.Generator().manual_seed(0))
    space = cell.case.space
    names = cell.case.problem.state_names(cell.width)
    axes = [torch.arange(space.lows[j], space.highs[j] + 1, dtype=torch.float32) for j in range(min(2, cell.width))]
    grid = torch.cartesian_prod(*axes) if len(axes) == 2 else axes[0][:, None]
    state = torch.cat([grid, grid.new_zeros(len(grid), cell.width - grid.shape[1])], dim=1)
    rep = batch.select([0] * len(state))

    def actions(pol, s: Tensor) -> Tensor:
        return torch.round(action_matrix(pol.act(pol.prepare(rep, b.eval_history, 1), 0, s)))

    learned = actions(policy, embed(state, names, problem.state_names(width)))
    optimal = actions(cell.policy, state)
    return plots.policy_slices({"learned": learned, "DP-optimal": optimal}, axes, names[:len(axes)],
                               list(problem.actions), instance_key(cell.instance))
