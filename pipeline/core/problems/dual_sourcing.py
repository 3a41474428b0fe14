"""Dual sourcing with backlog, batched over products. Suppliers, timing, state layout, cost and
sales accounting: docs/problems/dual_sourcing.md.
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
        """The exact DP's grid from the demand's support (docs/problems/dual_sourcing.md, Exact DP);
        the slots beyond the product's own lead times stay empty."""
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
        """Both orders non-increasing with slope at least -1 (docs/structure.md), and the two
        orderings measured on the exact DP (docs/problems/dual_sourcing.md, Structural properties)."""
        names = self.state_names(width)
        chain = names[: width - self.expedited_slots]  # net, regular_1, ..., regular_P
        props = [Property(a, c, lo=-1.0, hi=0.0) for a in self.actions for c in names]
        props += [Property("regular_order", later, other=earlier) for earlier, later in pairwise(chain)]
        props += [Property("expedited_order", earlier, other=later) for earlier, later in pairwise(chain)]
        return props
