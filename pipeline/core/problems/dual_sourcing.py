"""Dual sourcing with backlog (docs/problems/dual_sourcing.md), batched over products.

Two suppliers: the regular one (lead time ``l_r``, the product's ``lead_time``; unit cost
``c_r``, the product's ``unit_cost``) and the expedited one (lead time ``l_e < l_r`` and
unit cost ``c_e``, both problem parameters; ``c_e`` may differ by product, ``l_e`` sets
the state's layout and may not). Unmet demand is backlogged at ``b`` (the
product's ``shortage_cost``) per unit per period; leftover stock costs ``h`` (its
``holding_cost``).

State at the start of a period, after that period's arrivals, one row per product:
``[net_inventory, regular_1, ..., regular_P, expedited_1, ..., expedited_E]`` where
``net_inventory`` is stock on hand minus backlog, ``regular_j`` / ``expedited_j`` the
regular / expedited orders that arrive in ``j`` periods, ``E = max(l_e - 1, 0)`` and
``P = W - 1 - E`` (``W`` the state width, from the largest regular lead time in the batch).
A product with a shorter regular lead time puts its order into the slot of its own lead
time and the slots above stay empty.

Each period: order ``(q_r, q_e)``; with ``l_e = 0`` the expedited order arrives at once and
serves this period's demand; demand is served or backlogged; cost
``h (net)^+ + b (net)^- + c_r q_r + c_e q_e`` on the end-of-period net inventory; then
the orders due next period arrive (the regular order placed in period t arrives at the
start of period t + l_r, before that period's demand).

Sales (revenue in the reward formulation is ``price * sales``) are the period's demand:
with full backlogging every unit demanded is sold, the late ones when they ship, and the
revenue is booked when the demand arrives (the wait is what ``b`` charges). So the reward
objective is minus the cost plus a revenue that no policy changes, and ``sales <= demand``
as for every problem; the service measure here is the backlog (``Step.lost``).

Every operation is a min/max/add of the inputs, so integer inputs give integer
trajectories and the cost is differentiable almost everywhere in the orders.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.demand import tail_probability, true_pmf
from pipeline.core.problems.base import ProblemBase, StateSpace, Step, advance_pipeline, check_lead_times, lead_time_slots
from pipeline.core.properties import Property


@dataclass
class DualSourcing(ProblemBase):
    name: ClassVar[str] = "dual_sourcing"
    structural: ClassVar[tuple[str, ...]] = ("expedited_lead_time",)
    n_param_features: ClassVar[int] = 1
    actions: ClassVar[tuple[str, ...]] = ("regular_order", "expedited_order")
    discrete: ClassVar[bool] = True  # demand and orders are whole units; evaluation rounds orders

    expedited_lead_time: int = 0       # l_e: 0 means the expedited order serves this period's demand
    expedited_cost: float = 20.0       # c_e: cost per expedited unit (the regular one is unit_cost)

    def __post_init__(self):
        if int(self.expedited_lead_time) != self.expedited_lead_time or self.expedited_lead_time < 0:
            raise ValueError("dual_sourcing: expedited_lead_time must be a whole number >= 0, "
                             f"got {self.expedited_lead_time!r}")
        if not self.expedited_cost >= 0:
            raise ValueError(f"dual_sourcing: expedited_cost must be >= 0, got {self.expedited_cost!r}")
        self.expedited_lead_time = int(self.expedited_lead_time)
        self.expedited_cost = float(self.expedited_cost)

    @classmethod
    def mixed_instances(cls) -> list[tuple[dict, dict]]:
        return [({"expedited_lead_time": a, "expedited_cost": 20.0},
                 {"expedited_lead_time": b, "expedited_cost": 8.0}) for a, b in ((0, 1), (1, 2), (0, 2))]

    def param_features(self, batch: ProductBatch, total: Tensor) -> list[Tensor]:
        """The expedited unit cost's share."""
        c_e = self.per_product(batch, "expedited_cost")
        return [c_e / (total + c_e)]

    @property
    def min_lead_time(self) -> int:
        """The regular lead time must exceed the expedited one."""
        return self.expedited_lead_time + 1

    @property
    def expedited_slots(self) -> int:
        """E: expedited orders in transit that the state holds."""
        return max(self.expedited_lead_time - 1, 0)

    def state_width(self, max_lead_time: int) -> int:
        return max(int(max_lead_time), self.min_lead_time) + self.expedited_slots

    def state_names(self, width: int) -> list[str]:
        E = self.expedited_slots
        return (["net_inventory"] + [f"regular_{j}" for j in range(1, width - E)]
                + [f"expedited_{j}" for j in range(1, E + 1)])

    def initial_state(self, batch: ProductBatch, width: int) -> Tensor:
        return batch.demand.new_zeros(batch.size, width)

    def setup(self, batch: ProductBatch, width: int) -> tuple[Tensor, Tensor]:
        """The one-hot slots of every product's regular order [B, P + 2] and of the
        expedited order [B, E + 2] (column 0: it arrives at once)."""
        l_e = self.param(batch, "expedited_lead_time")
        check_lead_times(self, batch, width, l_e + 1)
        E = self.expedited_slots
        regular = lead_time_slots(batch.lead_time, width - E, batch.demand.dtype)
        expedited = lead_time_slots(torch.as_tensor(l_e, device=batch.lead_time.device).expand_as(batch.lead_time),
                                    E + 1, batch.demand.dtype)
        return regular, expedited

    def split(self, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(net inventory [B], regular pipeline [B, P], expedited pipeline [B, E])."""
        E = self.expedited_slots
        P = state.shape[1] - 1 - E
        return state[:, 0], state[:, 1:1 + P], state[:, 1 + P:]

    def step(self, state: Tensor, action: Tensor, demand: Tensor, batch: ProductBatch,
             slots: tuple[Tensor, Tensor]) -> Step:
        regular_slots, expedited_slots = slots
        net, regular, expedited = self.split(state)
        q_r, q_e = action[:, 0], action[:, 1]
        end = net + expedited_slots[:, 0] * q_e - demand
        held, backlog = torch.relu(end), torch.relu(-end)
        cost = (batch.holding_cost * held + batch.shortage_cost * backlog
                + batch.unit_cost * q_r + self.param(batch, "expedited_cost") * q_e)
        arriving_r, regular = advance_pipeline(regular, q_r, regular_slots)
        arriving_e, expedited = advance_pipeline(expedited, q_e, expedited_slots)
        next_state = torch.cat([(end + arriving_r + arriving_e)[:, None], regular, expedited], dim=1)
        return Step(next_state, cost, demand, held, backlog, torch.zeros_like(held))

    def inventory_position(self, state: Tensor) -> Tensor:
        """Net inventory plus every order in transit, regular and expedited."""
        return state.sum(dim=1)

    def expedited_position(self, state: Tensor, l_e: int | Tensor | None = None) -> Tensor:
        """Net inventory plus what arrives within the expedited lead time (the orders that
        an expedited order placed now cannot overtake): the dual-index expedited position
        (``l_e``: the expedited lead time, [B] each product's own; default the constant)."""
        net, regular, expedited = self.split(state)
        l_e = self.expedited_lead_time if l_e is None else l_e
        if isinstance(l_e, Tensor):
            within = torch.arange(regular.shape[1], device=regular.device) < l_e.to(regular.device)[:, None]
            return net + torch.where(within, regular, 0.0).sum(dim=1) + expedited.sum(dim=1)
        return net + regular[:, :l_e].sum(dim=1) + expedited.sum(dim=1)

    def dp_space(self, product: ProductBatch, mean: float, std: float):
        """The exact DP's grid, from the demand's support ``0..d`` (``d`` the largest demand
        with P(D >= d) above 1e-9): regular orders ``0..d + 1`` (in steady state a regular
        order replaces about one period's demand), expedited orders ``0..2d``, net inventory
        ``-2d..max(l_r + 1, 5) d + 2`` (the optimal policy holds at most the demand of
        ``l_r + 1`` periods; ``5d`` keeps the upward excursions of a tailored base-surge
        policy on the grid), each pipeline entry within its order range (an entry is one
        past order, so the pipeline is never truncated; the slots beyond the product's own
        lead times stay empty)."""
        d = self.demand_support(product)
        L, l_e = int(product.lead_time[0]), int(self.param(product, "expedited_lead_time"))
        max_regular, max_expedited = d + 1, 2 * d
        E, P = self.expedited_slots, self.state_width(L) - 1 - self.expedited_slots
        lows = (-2 * d,) + (0,) * (P + E)
        highs = ((max(L + 1, 5) * d + 2,) + (max_regular,) * (L - 1) + (0,) * (P - L + 1)
                 + (max_expedited,) * max(l_e - 1, 0) + (0,) * (E - max(l_e - 1, 0)))
        q_r, q_e = torch.meshgrid(torch.arange(max_regular + 1.0, dtype=torch.float64),
                                  torch.arange(max_expedited + 1.0, dtype=torch.float64), indexing="ij")
        return StateSpace(lows, highs, torch.stack([q_r.reshape(-1), q_e.reshape(-1)], dim=1))

    @staticmethod
    def demand_support(product: ProductBatch, eps: float = 1e-9) -> int:
        """The largest demand of ``product`` (a batch of one) with P(D >= d) > eps."""
        tail = tail_probability(true_pmf(product)[0])
        return int((tail > eps).nonzero().max())

    def claimed_properties(self, width: int):
        """docs/structure.md: both orders non-increasing in every state entry with slope at least -1.
        Orderings measured on the exact DP (docs/problems/dual_sourcing.md; they hold in
        every visited state for l_e = 0, 1, 2 on the instances there): the regular
        order is more sensitive to later-arriving stock and the expedited order to
        earlier-arriving stock, both within the regular pipeline and against net inventory:
        dq_r/d regular_P <= ... <= dq_r/d regular_1 <= dq_r/d net_inventory and
        dq_e/d net_inventory <= dq_e/d regular_1 <= ... <= dq_e/d regular_P."""
        names = self.state_names(width)
        chain = names[: width - self.expedited_slots]  # net, regular_1, ..., regular_P
        props = [Property(a, c, lo=-1.0, hi=0.0) for a in self.actions for c in names]
        props += [Property("regular_order", later, other=earlier) for earlier, later in pairwise(chain)]
        props += [Property("expedited_order", earlier, other=later) for earlier, later in pairwise(chain)]
        return props
