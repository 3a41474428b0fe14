"""Lost sales (docs/problems/lost_sales.md): Zipkin's grid, Poisson(5), h = 1, p in {4, 9, 19, 39}, L in 1..4,
plus L = 0. Every policy's cost is exact (no simulation noise): ``dp`` by relative value
iteration, each heuristic by exact evaluation of its order table on the same state grid
(``pipeline/core/heuristics/lost_sales_heuristics.py``), with its parameters chosen by a search over those
exact costs. With L = 0 every policy is the newsvendor, which is optimal.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.core.baselines import newsvendor_cost, newsvendor_levels
from pipeline.core.demand import trimmed_pmf, true_pmf
from pipeline.core.batch import ProductBatch, make_batch
from pipeline.core.dp import lost_sales_optimum
from pipeline.core.heuristics import lost_sales_heuristics as heuristics
from pipeline.core.problems.lost_sales import LostSales
from pipeline.studies.suites.instances import DPInstance, suite_notes

GRID = tuple({"p": p, "L": L} for p in (4, 9, 19, 39) for L in (0, 1, 2, 3, 4))
POLICIES = ("dp", "base_stock", "capped_base_stock", "myopic_1", "myopic_2", "vector_base_stock")
POLICY_CLASSES = (heuristics.CappedBaseStockPolicy, heuristics.VectorBaseStockPolicy, heuristics.OrderTablePolicy)
TIMED = ({"p": 4, "L": 2}, {"p": 19, "L": 3})
PICTURE = {"p": 9, "L": 2}  # the report draws its learned and DP policies
NOTES = suite_notes("lost_sales")  # docs/benchmarks.md


def product(p: float, L: int, mean: float = 5.0, h: float = 1.0) -> ProductBatch:
    """One Poisson product with these economics (its history is never read)."""
    return make_batch(np.zeros((1, 1)), L, h=h, p=p, mean=mean)


def evaluate(instance: dict, policies=POLICIES, mean: float = 5.0, h: float = 1.0) -> dict[str, float]:
    """Long-run average cost of each policy on one lost-sales instance."""
    p, L = instance["p"], instance["L"]
    one = product(p, L, mean, h)
    if L == 0:  # the newsvendor level is optimal, and a base-stock policy
        cost = float(newsvendor_cost(one, newsvendor_levels(one, "cost"))[0])
        return {name: cost for name in policies}
    inst = heuristics.Instance.of(one)
    out = {}
    if "dp" in policies:
        out["dp"] = lost_sales_optimum(inst.pmf, h, p, L, mean, math.sqrt(mean)).average_cost
    if "base_stock" in policies:
        out["base_stock"] = heuristics.best_base_stock(inst)[1]
    if "capped_base_stock" in policies:
        out["capped_base_stock"] = heuristics.best_capped_base_stock(inst)[1]
    if "myopic_1" in policies or "myopic_2" in policies:
        costs = heuristics.arrival_costs(inst)
        for periods in (1, 2):
            if f"myopic_{periods}" in policies:
                table = heuristics.myopic_table(inst, periods, costs)
                out[f"myopic_{periods}"] = heuristics.policy_average_cost(inst, table)
    if "vector_base_stock" in policies:
        out["vector_base_stock"] = heuristics.best_vector_base_stock(inst)[1]
    return {name: out[name] for name in policies}


def dp_instance(instance: dict, mean: float = 5.0, h: float = 1.0):
    """The instance's inputs to the generic exact DP, for the structural checks (lead times
    up to 3 fit a transition table; pipeline/studies/suites/dp_structure.py skips the rest)."""
    one, problem = product(instance["p"], instance["L"], mean, h), LostSales()
    return DPInstance(problem, one, problem.dp_space(one, mean, math.sqrt(mean)), trimmed_pmf(true_pmf(one)[0]))
