"""The classical dual-sourcing heuristics as policy objects, and the searches (``search_*``) that find
their parameters on exact costs (``exact_cost``). Rules, notation and searches: docs/problems/dual_sourcing.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core import dp
from pipeline.core.batch import ProductBatch
from pipeline.core.heuristics.search import local_search
from pipeline.core.problems.dual_sourcing import DualSourcing

Level = float | Tensor


def _params(batch: ProductBatch, *values: Level) -> tuple[Tensor, ...]:
    return tuple(torch.as_tensor(v, dtype=batch.demand.dtype, device=batch.demand.device) for v in values)


@dataclass
class SingleIndexPolicy:
    """Order up to ``expedited_level`` S_e with the expedited supplier and on to
    ``regular_level`` S_r with the regular one, both on the full inventory position."""

    problem: DualSourcing
    expedited_level: Level
    regular_level: Level

    def prepare(self, batch: ProductBatch, start: int, horizon: int):
        return _params(batch, self.expedited_level, self.regular_level)

    def act(self, levels, t: int, state: Tensor) -> Tensor:
        S_e, S_r = levels
        ip = self.problem.inventory_position(state)
        q_e = torch.relu(S_e - ip)
        return torch.stack([torch.relu(S_r - ip - q_e), q_e], dim=1)


@dataclass
class DualIndexPolicy:
    """Expedite up to ``expedited_level`` z_e on the expedited position, then order
    regular up to ``regular_level`` z_r on the full position (counting the expedited
    order), at most ``regular_cap`` units (infinite: the dual index; finite: the capped
    dual index)."""

    problem: DualSourcing
    expedited_level: Level
    regular_level: Level
    regular_cap: Level = math.inf

    def prepare(self, batch: ProductBatch, start: int, horizon: int):
        return (*_params(batch, self.expedited_level, self.regular_level, self.regular_cap),
                self.problem.param(batch, "expedited_lead_time"))

    def act(self, levels, t: int, state: Tensor) -> Tensor:
        z_e, z_r, cap, l_e = levels
        q_e = torch.relu(z_e - self.problem.expedited_position(state, l_e))
        q_r = torch.minimum(torch.relu(z_r - self.problem.inventory_position(state) - q_e), cap)
        return torch.stack([q_r, q_e], dim=1)


@dataclass
class TailoredBaseSurgePolicy:
    """A constant regular order ``base_order`` Q every period; expedite up to
    ``surge_level`` S on the expedited position."""

    problem: DualSourcing
    base_order: Level
    surge_level: Level

    def prepare(self, batch: ProductBatch, start: int, horizon: int):
        return (*_params(batch, self.base_order, self.surge_level), self.problem.param(batch, "expedited_lead_time"))

    def act(self, params, t: int, state: Tensor) -> Tensor:
        Q, S, l_e = params
        q_e = torch.relu(S - self.problem.expedited_position(state, l_e))
        return torch.stack([Q.expand_as(q_e), q_e], dim=1)


# ---------------------------------------------------------------- parameter searches

Cost = Callable[[object], float]  # a policy's exact long-run average cost


def exact_cost(trans: dp.Transitions, product: ProductBatch, max_truncation: float = 1e-9) -> Cost:
    """The exact long-run average cost of a policy on the DP grid of ``trans``; infinite
    when the grid may not represent the policy (its stationary law leaves the grid, or it
    reaches the largest order of either kind, where larger orders would be clamped)."""
    def cost(policy) -> float:
        sol = dp.evaluate_policy(trans, policy, product)
        if sol.truncation > max_truncation or sol.at_action_cap > max_truncation:
            return math.inf
        return sol.average_cost
    return cost


def _bounds(space: dp.StateSpace) -> tuple[int, int, int]:
    """(lowest net inventory, highest net inventory, largest regular order) of the grid."""
    return space.lows[0], space.highs[0], int(space.actions[:, 0].max())


def _sweep(values, make: Callable, cost: Cost, start, lows, highs) -> tuple[object, float]:
    """For every value ``v`` of one parameter, in order, the best other parameters ``p`` of
    the policy ``make(v, p)`` by local search, warm-started at the previous value's best;
    the best policy over all values and its cost."""
    best, best_value = None, math.inf
    for v in values:
        start, value = local_search(lambda p: cost(make(v, p)), start, lows, highs)
        if value < best_value:
            best, best_value = make(v, start), value
    return best, best_value


def search_single_index(problem: DualSourcing, cost: Cost, space: dp.StateSpace, mean: float,
                        product: ProductBatch) -> tuple[SingleIndexPolicy, float]:
    """Best (S_e, S_r - S_e): for every spread S_r - S_e from 0 to the largest regular order
    of the grid (beyond the largest demand the expedited order is never used), the best
    S_e by local search, from the mean demand over the regular lead time plus one period.
    (A local search over both stops in local minima: at l_r = 3, c_e = 5 at 22.0 against
    the best 19.0.)"""
    lo, hi, top = _bounds(space)
    return _sweep(range(top + 1), lambda spread, p: SingleIndexPolicy(problem, p[0], p[0] + spread),
                  cost, (round(mean * (int(product.lead_time[0]) + 1)),), (lo,), (hi,))


def search_dual_index(problem: DualSourcing, cost: Cost, space: dp.StateSpace, mean: float,
                      product: ProductBatch) -> tuple[DualIndexPolicy, float]:
    """Best (z_e, z_r - z_e) by local search (unit and diagonal steps) from z_e = the mean
    demand over the expedited lead time plus one period, plus one, and z_r - z_e = the mean
    demand over the lead-time difference."""
    lo, hi, _ = _bounds(space)
    l_e = int(problem.param(product, "expedited_lead_time"))
    start = (round(mean * (l_e + 1)) + 1, round(mean * (int(product.lead_time[0]) - l_e)))
    best, value = local_search(lambda p: cost(DualIndexPolicy(problem, p[0], p[0] + p[1])), start,
                               (lo, 0), (hi, hi - lo))
    return DualIndexPolicy(problem, best[0], best[0] + best[1]), value


def search_capped_dual_index(problem: DualSourcing, cost: Cost, space: dp.StateSpace, mean: float,
                             product: ProductBatch) -> tuple[DualIndexPolicy, float]:
    """Best (z_e, z_r - z_e, cap): for every cap from the largest regular order of the grid
    (where it does not bind: the dual index) down to 0, the best levels by local search
    warm-started at the best dual index. (A local search over all three stops at once: a
    cap that does not bind leaves the cost flat.)"""
    lo, hi, top = _bounds(space)
    di, _ = search_dual_index(problem, cost, space, mean, product)
    z_e, z_r = int(di.expedited_level), int(di.regular_level)
    return _sweep(range(top, -1, -1), lambda cap, p: DualIndexPolicy(problem, p[0], p[0] + p[1], cap),
                  cost, (z_e, z_r - z_e), (lo, 0), (hi, hi - lo))


def search_tailored_base_surge(problem: DualSourcing, cost: Cost, space: dp.StateSpace, mean: float,
                               product: ProductBatch) -> tuple[TailoredBaseSurgePolicy, float]:
    """Best (Q, S): for every base order Q below the mean demand (the stable ones), the
    best surge level S by local search from the mean demand over the expedited lead time
    plus one period, plus one."""
    lo, hi, _ = _bounds(space)
    start = (round(mean * (int(problem.param(product, "expedited_lead_time")) + 1)) + 1,)
    return _sweep(range(math.ceil(mean)), lambda Q, p: TailoredBaseSurgePolicy(problem, Q, p[0]),
                  cost, start, (lo,), (hi,))
