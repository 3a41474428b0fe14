"""Evaluate policies on the same demand paths and tabulate them against the omniscient one."""
from __future__ import annotations

import pandas as pd
import torch

from pipeline.core.batch import ProductBatch
from pipeline.core.rollout import period_reward, rollout
from pipeline.core.baselines import baseline_policies
from pipeline.core.penalty import penalty_properties, structure_metrics
from pipeline.core.protocols import Policy, Problem

STRUCTURE_PERIODS = 10  # decision periods whose states the violation metrics examine

REFERENCES = ("dp", "omniscient")  # the gap is taken to the first one present


@torch.no_grad()
def policy_metrics(problem: Problem, policy: Policy, batch: ProductBatch, start: int, horizon: int, warmup: int,
                   width: int, round_actions: bool, initial_state=None) -> dict[str, float]:
    """Population metrics per period after the warm-up (sums over products, so the
    average cost is total cost / product-periods)."""
    traj = rollout(problem, policy, batch, start, horizon, width, round_actions=round_actions,
                   initial_state=initial_state)
    w = slice(warmup, None)
    cost = traj.cost[:, w]
    periods = cost.numel()
    return {
        "avg_cost": float(cost.sum() / periods),
        "avg_reward": float(period_reward(traj, batch)[:, w].sum() / periods),
        "fill_rate": float(traj.sales[:, w].sum() / traj.demand[:, w].sum().clamp_min(1e-9)),
        "avg_on_hand": float(traj.held[:, w].sum() / periods),
        "avg_waste": float(traj.waste[:, w].sum() / periods),
        **{f"avg_{name}": float(traj.actions[:, w, i].sum() / periods)
           for i, name in enumerate(problem.actions)},
    }


@torch.no_grad()
def product_costs(problem: Problem, policy: Policy, batch: ProductBatch, start: int, horizon: int, warmup: int,
                  width: int, round_actions: bool, initial_state=None, discount: float = 1.0) -> torch.Tensor:
    """Each product's cost per period [B] (float64) on its path from ``start``: the average
    after the first ``warmup`` periods, or with ``discount`` < 1 the discounted cost per
    period from the start, (1 - discount) x the discounted sum (docs/benchmarks.md, Learned rows)."""
    traj = rollout(problem, policy, batch, start, horizon, width, round_actions=round_actions,
                   initial_state=initial_state)
    cost = traj.cost[:, warmup:].double()
    if discount >= 1.0:
        return cost.mean(dim=1)
    weights = discount ** torch.arange(cost.shape[1], dtype=torch.float64, device=cost.device)
    return (1 - discount) * (cost * weights).sum(dim=1)


def paired_gap(cost: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """The gap in percent of the total of ``cost`` [N] to that of ``reference`` [N] (the same
    N paths, one value per path), and its standard error in percentage points: the ratio
    estimator's, sd(cost - ratio x reference) / (sqrt(N) x mean(reference))."""
    cost, reference = cost.double(), reference.double()
    ratio = float(cost.sum() / reference.sum())
    n = len(cost)
    spread = float((cost - ratio * reference).std()) if n > 1 else float("inf")
    return 100 * (ratio - 1), 100 * spread / (n ** 0.5 * float(reference.mean()))


def evaluation_table(problem: Problem, policies: dict[str, Policy], batch: ProductBatch, start: int, horizon: int,
                     warmup: int, width: int, round_actions: bool, objective: str) -> pd.DataFrame:
    """One row per policy; ``gap_pct`` is relative to the exact optimum (``dp``) where there
    is one, else to the omniscient policy, in cost (or reward: a positive gap is worse in
    both formulations)."""
    rows = [{"policy": name, **policy_metrics(problem, pol, batch, start, horizon, warmup, width,
                                              round_actions)}
            for name, pol in policies.items()]
    table = pd.DataFrame(rows)
    present = [r for r in REFERENCES if r in set(table.policy)]
    if present:
        ref = table.set_index("policy").loc[present[0]]
        if objective == "reward":
            table["gap_pct"] = 100 * (ref.avg_reward - table.avg_reward) / abs(ref.avg_reward)
        else:
            table["gap_pct"] = 100 * (table.avg_cost - ref.avg_cost) / ref.avg_cost
    return table


def format_table(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:,.4f}")


def violation_summary(cfg, policy: Policy, problem: Problem, batch: ProductBatch, width: int, start: int | None = None,
                      skip: int | None = None, initial_state=None) -> dict[str, float]:
    """The structure metrics of ``pipeline.core.penalty.structure_metrics`` for the run's
    properties (penalised or not) over ``STRUCTURE_PERIODS`` decision periods of a rollout
    from ``start`` after its first ``skip`` periods: ``in/...`` and ``out/...``. By default
    the first scored periods of the evaluation (from ``eval.start`` after ``eval.warmup``),
    so that "in distribution" means the states the policy settles into, not the empty
    start every rollout leaves."""
    start = cfg.eval.start if start is None else start
    skip = cfg.eval.warmup if skip is None else skip
    periods = min(STRUCTURE_PERIODS, batch.periods - start - skip)
    props = penalty_properties(problem, width, list(cfg.penalty.properties))
    return structure_metrics(policy, problem, batch, start, periods, width, props, cfg.penalty.probe_widen,
                             cfg.seed, skip=skip, initial_state=initial_state)


def held_out_report(cfg, problem: Problem, policies: dict[str, Policy], train: ProductBatch, test: ProductBatch,
                    width: int):
    """``policies`` and every configured baseline (fitted on ``train``) on the held-out test
    products, same demand paths, integer orders where the problem is discrete; for each of
    ``policies`` also the share of states that violate a structural property, in the
    visited states (``violation_rate_in``) and in probes outside them
    (``violation_rate_out``). Returns the table, the baselines and each of ``policies``'
    violation metrics per property (``violation_summary``)."""
    e = cfg.eval
    horizon = test.periods - e.start
    baselines = baseline_policies(problem, train, test, width, e.start, horizon, e.warmup,
                                  cfg.problem.objective, cfg.seed + 1, which=e.baselines,
                                  sim_periods=e.omniscient_sim_periods)
    table = evaluation_table(problem, {**policies, **baselines}, test, e.start, horizon, e.warmup, width,
                             e.round_actions and problem.discrete, cfg.problem.objective)
    measured = {k: violation_summary(cfg, p, problem, test, width) for k, p in policies.items()}
    for region in ("in", "out"):
        table[f"violation_rate_{region}"] = table.policy.map(
            {k: v[f"{region}/violation_rate"] for k, v in measured.items()})
    return table, baselines, measured
