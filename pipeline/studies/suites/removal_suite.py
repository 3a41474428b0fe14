"""Joint procurement and removal: Poisson(5) demand, h = 1, c = 2, p in {4, 19}, removal value s in
{0, 1}, lead time L in {0, 1}; discounted cost from overstocked starts (docs/problems/removal.md,
Criterion of the benchmark).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pipeline.core import dp
from pipeline.core.baselines import BaseStockPolicy
from pipeline.core.demand import true_pmf
from pipeline.core.batch import ProductBatch, make_batch
from pipeline.core.heuristics.removal_heuristics import (
    IntervalStockPolicy,
    best_base_stock,
    best_interval_stock,
)
from pipeline.core.problems.removal import Removal
from pipeline.studies.suites.instances import DPInstance, suite_notes

GRID = tuple({"p": p, "s": s, "L": L, "gamma": 0.95} for L in (0, 1) for p in (4, 19) for s in (0, 1))
POLICIES = ("dp", "base_stock", "interval_stock")
POLICY_CLASSES = (BaseStockPolicy, IntervalStockPolicy)
TIMED = ({"p": 4, "s": 0, "L": 0, "gamma": 0.95}, {"p": 19, "s": 1, "L": 1, "gamma": 0.95})
PICTURE = {"p": 19, "s": 1, "L": 1, "gamma": 0.95}  # the report draws its learned and DP policies
NOTES = suite_notes("removal")  # docs/benchmarks.md
MEAN, HOLDING, UNIT_COST = 5.0, 1.0, 2.0


def product(p: float, L: int, mean: float = MEAN, h: float = HOLDING, c: float = UNIT_COST) -> ProductBatch:
    """One Poisson product with these economics (its history is never read)."""
    return make_batch(np.zeros((1, 1)), L, h=h, p=p, c=c, mean=mean)


def initial_law(space: dp.StateSpace, top: int) -> Tensor:
    """The start of the criterion: empty pipeline, on hand uniform on 0..top [S]."""
    states = space.states()
    start = (states[:, 1:] == 0).all(dim=1) & (states[:, 0] <= top)
    return start.double() / float(start.sum())


def grid_binds(trans: dp.Transitions, solution: dp.Solution, initial: Tensor, tol: float = 1e-6) -> bool:
    """Whether the grid or the order cap binds where the policy goes from the start
    (weighted by its discounted occupancy)."""
    occupancy = dp.discounted_occupancy(trans, solution.choice, initial, solution.discount)
    clamped = float(occupancy @ trans.clamped.gather(1, solution.choice[:, None])[:, 0])
    top_order = trans.space.actions[:, 0].max()
    at_cap = float(occupancy[trans.space.actions[solution.choice, 0] >= top_order].sum())
    return clamped > tol or at_cap > tol


def criterion(solution: dp.Solution, initial: Tensor) -> float:
    """(1 - gamma) * E[V(s0)]: the discounted cost per period from the start."""
    return (1 - solution.discount) * float(initial @ solution.values)


def dp_instance(instance: dict):
    """The instance's exact DP inputs and the start of its criterion."""

    problem = Removal(removal_value=float(instance["s"]))
    one = product(instance["p"], instance["L"])
    space = problem.dp_space(one, MEAN, math.sqrt(MEAN))
    return DPInstance(problem, one, space, dp.trimmed_pmf(true_pmf(one)[0]), instance["gamma"],
                      initial_law(space, math.ceil(problem.initial_stock_periods * MEAN)))


def evaluate(instance: dict, policies=POLICIES) -> dict[str, float]:
    """Discounted cost per period of each policy on one instance."""
    case = dp_instance(instance)
    problem, one, space, gamma, initial = case.problem, case.product, case.space, case.discount, case.initial
    L, sd = instance["L"], math.sqrt(MEAN)
    trans = dp.transitions(problem, one, space, case.pmf)

    def cost_of(policy) -> float:  # a policy the grid cannot represent is no candidate
        solution = dp.evaluate_policy(trans, policy, one, gamma)
        return math.inf if grid_binds(trans, solution, initial) else criterion(solution, initial)

    out = {}
    if "dp" in policies:
        optimum = dp.solve(trans, gamma)
        if grid_binds(trans, optimum, initial):
            raise ValueError(f"removal benchmark: the DP grid binds on instance {instance}")
        # evaluated like the heuristics, so that a heuristic playing the same table costs the same
        out["dp"] = criterion(dp.solve(trans, gamma, fixed=optimum.choice), initial)
    start = round(MEAN * (L + 1) + sd * math.sqrt(L + 1))
    if "base_stock" in policies or "interval_stock" in policies:
        level, out["base_stock"] = best_base_stock(
            lambda S: cost_of(BaseStockPolicy(problem, torch.tensor([float(S)]), one.product_id)), start)
    if "interval_stock" in policies:
        out["interval_stock"] = best_interval_stock(
            lambda a, b: cost_of(IntervalStockPolicy(problem, torch.tensor([float(a)]),
                                                     torch.tensor([float(b)]), one.product_id)),
            (level, level + round(MEAN)), space.highs[0])[1]
    return {name: out[name] for name in policies}
