"""Perishable inventory: De Moor et al. (2022) Scenario A, exact long-run average costs of the DP
and the heuristics (docs/benchmarks.md; grid and evaluation: docs/problems/perishable.md)."""
from __future__ import annotations

import numpy as np

from pipeline.core import dp
from pipeline.core.batch import ProductBatch, make_batch
from pipeline.core.heuristics.perishable_heuristics import (
    BspLowEw,
    Instance,
    PerishableBaseStock,
    best_base_stock,
    best_bsp_low_ew,
    product_pmf,
)
from pipeline.core.problems.perishable import Perishable
from pipeline.studies.suites.instances import DPInstance, suite_notes

MEAN, CV, UNIT_COST, SHORTAGE, HOLDING, MAX_ORDER = 4.0, 0.5, 3.0, 5.0, 1.0, 10
SIZES = ((2, 1), (2, 2), (3, 1), (3, 2), (4, 1))  # (m, L) whose 11^(m+L-1) grid solves in seconds
GRID = tuple({"m": m, "L": L, "w": w, "issuing": issuing}
             for m, L in SIZES for w in (7, 10) for issuing in ("fifo", "lifo")) + tuple(
    {"m": 5, "L": 1, "w": 7, "issuing": issuing} for issuing in ("fifo", "lifo"))  # 161,051 states: 4-7 min each
POLICIES = ("dp", "base_stock", "waste_aware_base_stock")
POLICY_CLASSES = (PerishableBaseStock, BspLowEw)
TIMED = tuple({"m": m, "L": L, "w": 7, "issuing": "fifo"} for m, L in ((2, 1), (3, 1), (3, 2)))
PICTURE = {"m": 2, "L": 1, "w": 7, "issuing": "fifo"}  # the report draws its learned and DP policies
NOTES = suite_notes("perishable")  # docs/benchmarks.md


def product(L: int, mean: float = MEAN, cv: float = CV) -> ProductBatch:
    """One Scenario-A product (its history is never read)."""
    return make_batch(np.zeros((1, 1)), L, h=HOLDING, p=SHORTAGE, c=UNIT_COST, mean=mean, dist="gamma", shape=cv)


def instance_problem(instance: dict) -> Perishable:
    return Perishable(shelf_life=instance["m"], issuing=instance["issuing"],
                      waste_cost=float(instance["w"]), max_order=MAX_ORDER)


def optimum(inst: Instance, discount: float = 1.0) -> dp.Solution:
    """The exact optimum on the instance's grid: average cost by relative value iteration
    (lazy, ``aperiodic=0.5``: LIFO chains make plain RVI oscillate), or discounted."""
    return dp.solve(inst.trans, discount, aperiodic=dp.lazy(discount))


@dp.one_thread()  # on every call: many small tensor operations
def evaluate(instance: dict, policies=POLICIES) -> dict[str, float]:
    """Long-run average cost of each policy on one Scenario-A instance."""
    inst = Instance.of(instance_problem(instance), product(instance["L"]))
    out = {}
    if "dp" in policies:
        out["dp"] = optimum(inst).average_cost
    level = None
    if "base_stock" in policies or "waste_aware_base_stock" in policies:
        (level,), cost = best_base_stock(inst)
        if "base_stock" in policies:
            out["base_stock"] = cost
    if "waste_aware_base_stock" in policies:
        out["waste_aware_base_stock"] = best_bsp_low_ew(inst, (level, level, max(1, level)))[1]
    return out


def dp_instance(instance: dict):
    """The instance's exact DP inputs, for the structural checks (pipeline/studies/suites/dp_structure.py)."""

    problem, one = instance_problem(instance), product(instance["L"])
    return DPInstance(problem, one, problem.dp_space(one, MEAN, 0.0), product_pmf(one)[0])
