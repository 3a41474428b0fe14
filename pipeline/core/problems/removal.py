"""Joint procurement and removal, lost sales, batched over products: an order and a removal of on-hand
units each period. Timing, state and cost: docs/problems/removal.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.problems.base import ProblemBase, StateSpace, Step, advance_pipeline, lead_time_slots
from pipeline.core.problems.lost_sales import lost_sales_grid
from pipeline.core.properties import Property

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # spreads the initial stock of batch rows evenly


@dataclass
class Removal(ProblemBase):
    name: ClassVar[str] = "removal"
    n_param_features: ClassVar[int] = 1
    actions: ClassVar[tuple[str, ...]] = ("order", "removal")
    discrete: ClassVar[bool] = True
    min_lead_time: ClassVar[int] = 0

    removal_value: float = 1.0          # s: received per unit removed (negative: a disposal cost)
    initial_stock_periods: float = 6.0  # products start with on-hand spread over 0..this x mean demand

    def __post_init__(self):
        if not math.isfinite(self.removal_value):
            raise ValueError(f"removal_value must be a finite number (below every unit cost), "
                             f"got {self.removal_value}")
        if not (math.isfinite(self.initial_stock_periods) and self.initial_stock_periods >= 0):
            raise ValueError(f"initial_stock_periods must be >= 0, got {self.initial_stock_periods}")

    @classmethod
    def mixed_instances(cls) -> list[tuple[dict, dict]]:
        return [({"removal_value": 1.0, "initial_stock_periods": 6.0},
                 {"removal_value": -0.5, "initial_stock_periods": 3.0})]

    def param_features(self, batch: ProductBatch, total: Tensor) -> list[Tensor]:
        """The removal value relative to the product's costs (negative: a disposal cost)."""
        return [self.per_product(batch, "removal_value") / total]

    def state_width(self, max_lead_time: int) -> int:
        return max(1, int(max_lead_time))

    def state_names(self, width: int) -> list[str]:
        return ["on_hand"] + [f"pipeline_{j}" for j in range(1, width)]

    def initial_state(self, batch: ProductBatch, width: int) -> Tensor:
        """Empty pipeline; on hand spread over 0..``initial_stock_periods`` x the product's
        mean demand over its whole history (row i at fraction frac(i * golden ratio)), so
        that rollouts start in the overstock the removal is for. An environment setting:
        the policy never sees it except as its state."""
        state = batch.demand.new_zeros(batch.size, width)
        rows = torch.arange(1, batch.size + 1, dtype=torch.float64, device=state.device)
        spread = (rows * GOLDEN) % 1.0
        top = torch.round(self.param(batch, "initial_stock_periods") * batch.demand.double().mean(dim=1))
        state[:, 0] = torch.round(spread * top).to(state.dtype)
        return state

    def setup(self, batch: ProductBatch, width: int) -> Tensor:
        """The lead-time routing of orders; refuses products whose unit cost is not above
        the removal value (buying to remove would pay)."""
        value = torch.as_tensor(self.param(batch, "removal_value"))
        below = batch.unit_cost <= value
        if bool(below.any()):
            raise ValueError(f"removal: removal_value {float(value.max())} must be below every "
                             f"product's unit cost (lowest {float(batch.unit_cost[below].min()):g})")
        return lead_time_slots(batch.lead_time, width, batch.demand.dtype)

    def step(self, state: Tensor, action: Tensor, demand: Tensor, batch: ProductBatch,
             slots: Tensor) -> Step:
        order, removal = torch.relu(action[:, 0]), torch.relu(action[:, 1])
        removed = torch.minimum(removal, state[:, 0])
        available = state[:, 0] - removed + slots[:, 0] * order
        sales = torch.minimum(available, demand)
        held = torch.relu(available - demand)
        lost = torch.relu(demand - available)
        cost = (batch.unit_cost * order - self.param(batch, "removal_value") * removed
                + batch.holding_cost * held + batch.shortage_cost * lost)
        arriving, pipeline = advance_pipeline(state[:, 1:], order, slots)
        next_state = torch.cat([(held + arriving)[:, None], pipeline], dim=1)
        return Step(next_state, cost, sales, held, lost, removed)

    def dp_space(self, product: ProductBatch, mean: float, std: float):
        """On hand up to the lost-sales grid's top or ``initial_stock_periods`` x mean
        demand, whichever is larger; pipeline entries and orders up to one period's demand
        plus 5 deviations; removals of 0..top units. Every (order, removal) pair is an
        action, so the DP itself decides never to do both."""
        L = int(product.lead_time[0])
        top, max_order = lost_sales_grid(mean, std, L)
        top = max(top, math.ceil(float(self.param(product, "initial_stock_periods")) * mean))
        actions = torch.cartesian_prod(torch.arange(max_order + 1, dtype=torch.float64),
                                       torch.arange(top + 1, dtype=torch.float64))
        return StateSpace(lows=(0,) * max(1, L), highs=(top,) + (max_order,) * (L - 1), actions=actions)

    def claimed_properties(self, width: int):
        """docs/structure.md: the order is non-increasing and the removal non-decreasing in on-hand,
        each by at most one unit per unit. (Never ordering and removing in the same period
        is not a Jacobian property: ``order_and_removal_together`` measures it on a table.)"""
        return [Property("order", "on_hand", lo=-1.0, hi=0.0),
                Property("removal", "on_hand", lo=0.0, hi=1.0)]


def order_and_removal_together(table: Tensor, mask: Tensor | None = None) -> float:
    """Share of the states of a policy table (grid shape + [order, removal]) where the policy
    both orders and removes."""
    both = (table[..., 0] > 0) & (table[..., 1] > 0)
    if mask is not None:
        both = both[mask.reshape(both.shape)]
    return float(both.double().mean())
