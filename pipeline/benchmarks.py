"""Benchmark suites: every policy of a suite on each instance, against the exact optimum.

Rows have the columns ``suite, problem, instance, policy, avg_cost, gap_pct``; ``instance``
is ``key=value`` pairs joined by ``;`` in the suite's key order, ``policy`` ``dp`` is the
exact optimum and ``gap_pct`` is relative to it.

Lost sales (GUIDE 2.1): Zipkin's grid, Poisson(5), h = 1, p in {4, 9, 19, 39}, L in 1..4,
plus L = 0. The policies here are computed exactly (no simulation noise): ``dp`` by relative
value iteration, ``base_stock`` the best base-stock level, each level's long-run cost from
exact policy evaluation on the same state grid.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.baselines import newsvendor_cost, newsvendor_levels, true_pmf
from pipeline.data import ProductBatch, batch_from_columns
from pipeline.dp import base_stock_table, lost_sales_grid, lost_sales_optimum, lost_sales_rvi

COLUMNS = ["suite", "problem", "instance", "policy", "avg_cost", "gap_pct"]
LOST_SALES_GRID = [{"p": p, "L": L} for p in (4, 9, 19, 39) for L in (0, 1, 2, 3, 4)]
LOST_SALES_POLICIES = ("dp", "base_stock")


def instance_key(instance: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in instance.items())


def _instance(p: float, L: int, mean: float, h: float) -> ProductBatch:
    """One Poisson product with these economics (its history is never read)."""
    return batch_from_columns({
        "product_id": [0], "demand": np.zeros((1, 1)), "holding_cost": [h], "shortage_cost": [p],
        "unit_cost": [0.0], "price": [0.0], "lead_time": [L], "true_dist": ["poisson"],
        "true_mean": [mean], "true_shape": [0.0]})


def _best_integer(cost: Callable[[int], float], start: int) -> tuple[int, float]:
    """Local search over integers for a unimodal cost, from ``start``."""
    seen = {start: cost(start)}
    best = start
    while True:
        for s in (best - 1, best + 1):
            if s >= 0 and s not in seen:
                seen[s] = cost(s)
        nxt = min(seen, key=seen.get)
        if nxt == best:
            return best, seen[best]
        best = nxt


def lost_sales_instance(p: float, L: int, mean: float = 5.0, h: float = 1.0,
                        policies=LOST_SALES_POLICIES) -> dict[str, float]:
    """Long-run average cost of each policy on one lost-sales instance."""
    product = _instance(p, L, mean, h)
    if L == 0:  # the newsvendor level is optimal, and a base-stock policy
        cost = float(newsvendor_cost(product, newsvendor_levels(product, "cost"))[0])
        return {name: cost for name in policies}
    pmf, sd = true_pmf(product)[0], math.sqrt(mean)
    out = {}
    if "dp" in policies:
        out["dp"] = lost_sales_optimum(pmf, h, p, L, mean, sd).average_cost
    if "base_stock" in policies:
        N, Q = lost_sales_grid(mean, sd, L)

        def cost(level: int) -> float:
            return lost_sales_rvi(pmf, h, p, L, N, Q, fixed=base_stock_table(level, N, Q, L)).average_cost
        out["base_stock"] = _best_integer(cost, round(mean * (L + 1) + sd * math.sqrt(L + 1)))[1]
    return out


def run_suite(suite: str, policies, instances: list[dict] | None = None,
              progress: Callable[[str], None] = lambda line: None) -> pd.DataFrame:
    if suite != "lost_sales":
        raise ValueError(f"unknown benchmark suite {suite!r}; known: lost_sales")
    unknown = set(policies) - set(LOST_SALES_POLICIES)
    if unknown:
        raise ValueError(f"suite lost_sales has no policies {sorted(unknown)}; known: {', '.join(LOST_SALES_POLICIES)}")
    rows = []
    for i, inst in enumerate(instances or LOST_SALES_GRID):
        costs = lost_sales_instance(inst["p"], inst["L"], policies=policies)
        ref = costs.get("dp")
        for name, value in costs.items():
            gap = 100 * (value - ref) / ref if ref else float("nan")
            rows.append([suite, "lost_sales", instance_key(inst), name, value, gap])
        progress(f"[benchmark] {i + 1}/{len(instances or LOST_SALES_GRID)} {instance_key(inst)}: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in costs.items()))
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame, command: str) -> str:
    """Instances as rows, policies as columns (cost and gap to dp)."""
    lines = [f"## {table.suite.iloc[0]}", "", f"Command: `{command}`", ""]
    policies = list(dict.fromkeys(table.policy))
    lines.append("| instance | " + " | ".join(policies) + " |")
    lines.append("|---|" + "---|" * len(policies))
    for inst, group in table.groupby("instance", sort=False):
        cells = group.set_index("policy")
        lines.append(f"| {inst} | " + " | ".join(
            f"{cells.avg_cost[p]:.4f}" + ("" if p == "dp" else f" ({cells.gap_pct[p]:+.2f}%)")
            for p in policies) + " |")
    return "\n".join(lines) + "\n"
