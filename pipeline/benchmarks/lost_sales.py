"""Lost sales (GUIDE 2.1): Zipkin's grid, Poisson(5), h = 1, p in {4, 9, 19, 39}, L in 1..4,
plus L = 0. Every policy's cost is exact (no simulation noise): ``dp`` by relative value
iteration, each heuristic by exact evaluation of its order table on the same state grid,
with its parameters chosen by a search over those exact costs.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.baselines import newsvendor_cost, newsvendor_levels, true_pmf
from pipeline.data import ProductBatch, batch_from_columns
from pipeline.dp import base_stock_table, lost_sales_grid, lost_sales_optimum, lost_sales_rvi
from pipeline.heuristics.search import local_search

GRID = tuple({"p": p, "L": L} for p in (4, 9, 19, 39) for L in (0, 1, 2, 3, 4))
POLICIES = ("dp", "base_stock")
NOTES = ("Zipkin (2008): Poisson(5) demand, h = 1, long-run average cost; published optima "
         "p=4, L=2: 4.40 and p=19, L=4: 8.89.")


def product(p: float, L: int, mean: float = 5.0, h: float = 1.0) -> ProductBatch:
    """One Poisson product with these economics (its history is never read)."""
    return batch_from_columns({
        "product_id": [0], "demand": np.zeros((1, 1)), "holding_cost": [h], "shortage_cost": [p],
        "unit_cost": [0.0], "price": [0.0], "lead_time": [L], "true_dist": ["poisson"],
        "true_mean": [mean], "true_shape": [0.0]})


def evaluate(instance: dict, policies=POLICIES, mean: float = 5.0, h: float = 1.0) -> dict[str, float]:
    """Long-run average cost of each policy on one lost-sales instance."""
    p, L = instance["p"], instance["L"]
    one = product(p, L, mean, h)
    if L == 0:  # the newsvendor level is optimal, and a base-stock policy
        cost = float(newsvendor_cost(one, newsvendor_levels(one, "cost"))[0])
        return {name: cost for name in policies}
    pmf, sd = true_pmf(one)[0], math.sqrt(mean)
    N, Q = lost_sales_grid(mean, sd, L)
    out = {}
    if "dp" in policies:
        out["dp"] = lost_sales_optimum(pmf, h, p, L, mean, sd).average_cost
    if "base_stock" in policies:
        def cost(level: tuple[int]) -> float:
            return lost_sales_rvi(pmf, h, p, L, N, Q, fixed=base_stock_table(level[0], N, Q, L)).average_cost
        out["base_stock"] = local_search(cost, (round(mean * (L + 1) + sd * math.sqrt(L + 1)),))[1]
    return out



