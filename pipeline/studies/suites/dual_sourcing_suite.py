"""Dual sourcing (docs/problems/dual_sourcing.md): the Veeraraghavan & Scheller-Wolf (2008) family, demand uniform
on {0..4}, h = 5, b = 495, l_e = 0, c_r = 0, l_r in {2, 3, 4}, c_e in {5, 10, 20}. Every
cost is exact (no simulation noise): ``dp`` by relative value iteration on the problem's
DP grid, each heuristic by exact evaluation of its order table on the same grid, with its
parameters chosen by a local search over those exact costs.
"""
from __future__ import annotations

import numpy as np

from pipeline.core import dp
from pipeline.core.demand import true_pmf
from pipeline.core.batch import ProductBatch, make_batch
from pipeline.core.heuristics.dual_sourcing_heuristics import (
    DualIndexPolicy,
    SingleIndexPolicy,
    TailoredBaseSurgePolicy,
    exact_cost,
    search_capped_dual_index,
    search_dual_index,
    search_single_index,
    search_tailored_base_surge,
)
from pipeline.core.problems.dual_sourcing import DualSourcing
from pipeline.studies.suites.instances import DPInstance, suite_notes

GRID = tuple({"l_r": l_r, "c_e": c_e} for l_r in (2, 3, 4) for c_e in (5, 10, 20))
POLICIES = ("dp", "single_index", "dual_index", "capped_dual_index", "tailored_base_surge")
POLICY_CLASSES = (SingleIndexPolicy, DualIndexPolicy, TailoredBaseSurgePolicy)
TIMED = tuple({"l_r": l_r, "c_e": 20} for l_r in (2, 3, 4))
PICTURE = {"l_r": 2, "c_e": 20}  # the report draws its learned and DP policies
NOTES = suite_notes("dual_sourcing")  # docs/benchmarks.md
SEARCHES = {"single_index": search_single_index, "dual_index": search_dual_index,
            "capped_dual_index": search_capped_dual_index, "tailored_base_surge": search_tailored_base_surge}
MEAN = 2.0  # uniform on 0..2 * mean


def product(l_r: int, h: float = 5.0, b: float = 495.0, c_r: float = 0.0, mean: float = MEAN) -> ProductBatch:
    """One product with uniform demand on 0..2 * mean and these economics (its history is
    never read)."""
    return make_batch(np.zeros((1, 1)), l_r, h=h, p=b, c=c_r, mean=mean, dist="uniform")


def instance_transitions(instance: dict) -> tuple[DualSourcing, ProductBatch, dp.Transitions]:
    """The problem, its product and the exact transition table on the problem's DP grid."""
    case = dp_instance(instance)
    return case.problem, case.product, dp.transitions(case.problem, case.product, case.space, case.pmf)


@dp.one_thread()  # on every call: many small tensor operations
def evaluate(instance: dict, policies=POLICIES) -> dict[str, float]:
    """Long-run average cost of each policy on one dual-sourcing instance."""
    problem, one, trans = instance_transitions(instance)
    out = {}
    if "dp" in policies:
        solution = dp.solve(trans)
        dp.check_truncation(solution, 1e-6)
        out["dp"] = solution.average_cost
    cost = exact_cost(trans, one)
    for name, search in SEARCHES.items():
        if name in policies:
            out[name] = search(problem, cost, trans.space, MEAN, one)[1]
    return out


def dp_instance(instance: dict):
    """The instance's exact DP inputs, for the structural checks (pipeline/studies/suites/dp_structure.py)."""

    problem, one = DualSourcing(expedited_cost=float(instance["c_e"])), product(instance["l_r"])
    return DPInstance(problem, one, problem.dp_space(one, MEAN, float(np.sqrt(2.0))),
                      dp.trimmed_pmf(true_pmf(one)[0]))
