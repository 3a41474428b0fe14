"""Lost sales with lead time L >= 0 (GUIDE 2.1), batched over products.

State after arrivals, one row per product: ``[on_hand, pipeline_1, ..., pipeline_{W-1}]``
where ``pipeline_j`` arrives in ``j`` periods and ``W = max(1, max_lead_time)``. Products
in one batch may have different lead times: an order is put into the pipeline slot of its
own product's lead time (``L = 0``: it serves this period's demand at once).

Every operation is a min/max/add of the inputs, so integer inputs give integer
trajectories and the cost is differentiable almost everywhere in the orders.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.data import ProductBatch


@dataclass
class Step:
    """What one period produced, per product."""

    next_state: Tensor
    cost: Tensor  # holding + shortage + purchase cost
    sales: Tensor
    demand: Tensor
    held: Tensor
    lost: Tensor


class LostSales:
    name = "lost_sales"
    discrete = True  # demand and orders are whole units; evaluation rounds orders

    def state_width(self, max_lead_time: int) -> int:
        return max(1, int(max_lead_time))

    def state_names(self, width: int) -> list[str]:
        return ["on_hand"] + [f"pipeline_{j}" for j in range(1, width)]

    def initial_state(self, batch: ProductBatch, width: int) -> Tensor:
        return batch.demand.new_zeros(batch.size, width)

    def arrival_slots(self, batch: ProductBatch, width: int) -> Tensor:
        """One-hot [B, W + 1] routing each product's order by its lead time L: column 0
        (L = 0) puts it on hand at once, column j arrives in j periods. Computed once per
        rollout."""
        slots = torch.arange(width + 1, device=batch.demand.device)
        return (slots[None, :] == batch.lead_time[:, None]).to(batch.demand.dtype)

    def step(self, state: Tensor, order: Tensor, demand: Tensor, batch: ProductBatch,
             slots: Tensor) -> Step:
        on_hand, pipeline = state[:, 0], state[:, 1:]
        available = on_hand + slots[:, 0] * order
        sales = torch.minimum(available, demand)
        held = torch.relu(available - demand)
        lost = torch.relu(demand - available)
        cost = (batch.holding_cost * held + batch.shortage_cost * lost
                + batch.unit_cost * order)
        # arrivals[:, j] arrives in j + 1 periods; this period's order joins its slot
        arrivals = torch.cat([pipeline, torch.zeros_like(on_hand)[:, None]], dim=1)
        arrivals = arrivals + slots[:, 1:] * order[:, None]
        next_state = torch.cat([(held + arrivals[:, 0])[:, None], arrivals[:, 1:]], dim=1)
        return Step(next_state, cost, sales, demand, held, lost)

    def inventory_position(self, state: Tensor) -> Tensor:
        return state.sum(dim=1)
