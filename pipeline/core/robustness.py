"""Robustness: policies evaluated on the same held-out products under demand shocks and from starting
states off the training distribution (pure torch). The scenarios: docs/sipn.md, Robustness scenarios.
"""
from __future__ import annotations

import pandas as pd
from torch import Tensor

from pipeline.core.batch import ProductBatch, shocked
from pipeline.core.evaluation import policy_metrics, violation_summary
from pipeline.core.policy import demand_scale
from pipeline.core.protocols import Policy, Problem


def off_distribution_state(problem: Problem, batch: ProductBatch, start: int, width: int, multiple: float) -> Tensor:
    """The problem's initial state plus ``multiple`` x the product's mean demand (over the
    history before ``start``) in every entry."""
    scale = demand_scale(batch, start)
    return problem.initial_state(batch, width) + multiple * scale[:, None]


def scenarios(cfg, problem: Problem, batch: ProductBatch, width: int) -> list[dict]:
    """The configured scenarios: name, batch, rollout start, warm-up, initial state, and
    where the violation metrics look (``skip`` periods into the rollout)."""
    e, r = cfg.eval, cfg.robustness
    scored = e.start + e.warmup
    out = [dict(scenario="nominal", batch=batch, start=e.start, warmup=e.warmup, initial_state=None, skip=e.warmup)]
    factors = {"up": r.up_factor, "down": r.down_factor, "spike": r.spike_factor}
    for kind in r.shocks:
        out.append(dict(scenario=kind, batch=shocked(batch, kind, scored + r.shock_at, factors[kind], problem.discrete),
                        start=e.start, warmup=e.warmup, initial_state=None, skip=e.warmup + r.shock_at))
    for k in r.initial_multiples:
        out.append(dict(scenario=f"start_{k:g}x", batch=batch, start=scored, warmup=0,
                        initial_state=off_distribution_state(problem, batch, scored, width, k), skip=0))
    return out


def robustness_table(cfg, problem: Problem, policies: dict[str, Policy], learned: set[str], batch: ProductBatch,
                     width: int, progress=None) -> pd.DataFrame:
    """One row per (scenario, policy): average cost and reward per product-period, fill
    rate, and for the networks (``learned``: names of differentiable policies) the share
    of states violating a structural property, in the states the scenario visits
    (``violation_rate_in``, from the shock on) and in probes outside them
    (``violation_rate_out``)."""
    rows = []
    round_actions = cfg.eval.round_actions and problem.discrete
    for sc in scenarios(cfg, problem, batch, width):
        b, horizon = sc["batch"], batch.periods - sc["start"]
        for name, policy in policies.items():
            m = policy_metrics(problem, policy, b, sc["start"], horizon, sc["warmup"], width, round_actions,
                               initial_state=sc["initial_state"])
            row = {"scenario": sc["scenario"], "policy": name, "avg_cost": m["avg_cost"],
                   "avg_reward": m["avg_reward"], "fill_rate": m["fill_rate"]}
            if name in learned:
                v = violation_summary(cfg, policy, problem, b, width, start=sc["start"], skip=sc["skip"],
                                      initial_state=sc["initial_state"])
                row.update(violation_rate_in=v["in/violation_rate"], violation_rate_out=v["out/violation_rate"])
            rows.append(row)
            if progress:
                progress(f"{sc['scenario']:>10}  {name:<14} cost {m['avg_cost']:.4f}")
    return pd.DataFrame(rows)
