"""Lost sales with lead time L >= 0, batched over products (products of one batch may have
different lead times). State layout, timing and cost: docs/problems/lost_sales.md."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.problems.base import ProblemBase, StateSpace, Step, lead_time_slots, shift_pipeline
from pipeline.core.properties import Property


def lost_sales_grid(mean: float, std: float, lead_time: int) -> tuple[int, int]:
    """A state grid wide enough for an instance: (max_on_hand, max_order)."""
    L = lead_time
    return math.ceil(mean * (L + 1) + 4 * std * math.sqrt(L + 1)), math.ceil(mean + 5 * std) + 2


@dataclass
class LostSales(ProblemBase):
    name: ClassVar[str] = "lost_sales"
    actions: ClassVar[tuple[str, ...]] = ("order",)
    discrete: ClassVar[bool] = True  # demand and orders are whole units; evaluation rounds orders
    min_lead_time: ClassVar[int] = 0

    def state_width(self, max_lead_time: int) -> int:
        return max(1, int(max_lead_time))

    def state_names(self, width: int) -> list[str]:
        return ["on_hand"] + [f"pipeline_{j}" for j in range(1, width)]

    def setup(self, batch: ProductBatch, width: int) -> Tensor:
        return lead_time_slots(batch.lead_time, width, batch.demand.dtype)

    def step(self, state: Tensor, action: Tensor, demand: Tensor, batch: ProductBatch,
             slots: Tensor) -> Step:
        order = action[:, 0]
        available = state[:, 0] + slots[:, 0] * order
        sales = torch.minimum(available, demand)
        held = torch.relu(available - demand)
        lost = torch.relu(demand - available)
        cost = (batch.holding_cost * held + batch.shortage_cost * lost
                + batch.unit_cost * order)
        # the pipeline moves up by one (its first entry arrives) and what is held stays on hand
        next_state = shift_pipeline(state[:, 1:], order, slots) + F.pad(held[:, None], (0, state.shape[1] - 1))
        return Step(next_state, cost, sales, held, lost, torch.zeros_like(held))

    def dp_space(self, product: ProductBatch, mean: float, std: float):
        """The grid of ``dp.lost_sales_grid``: on hand up to the (L+1)-period demand plus 4
        deviations, orders up to one period's demand plus 5 deviations."""
        L = int(product.lead_time[0])
        top, max_order = lost_sales_grid(mean, std, L)
        return StateSpace(lows=(0,) * max(1, L), highs=(top,) + (max_order,) * (L - 1),
                          actions=torch.arange(max_order + 1, dtype=torch.float64)[:, None])

    def claimed_properties(self, width: int):
        """Order non-increasing with slope at least -1, more sensitive to later-arriving stock (Morton 1969;
        Zipkin 2008): docs/problems/lost_sales.md, Structural properties of the DP policies."""
        names = self.state_names(width)
        props = [Property("order", c, lo=-1.0, hi=0.0) for c in names]
        props += [Property("order", names[j + 1], other=names[j]) for j in range(width - 1)]
        return props
