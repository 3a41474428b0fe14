"""Perishable inventory with lead time L >= 1 (De Moor et al. 2022), batched over products. Timing,
state layout (youngest first), issuing and cost: docs/problems/perishable.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.problems.base import ProblemBase, StateSpace, Step, advance_pipeline, check_lead_times, lead_time_slots
from pipeline.core.properties import Property

ISSUING = ("fifo", "lifo")


@dataclass
class Perishable(ProblemBase):
    name: ClassVar[str] = "perishable"
    structural: ClassVar[tuple[str, ...]] = ("shelf_life", "max_order")
    choices: ClassVar[dict] = {"issuing": ISSUING}
    n_param_features: ClassVar[int] = 3
    actions: ClassVar[tuple[str, ...]] = ("order",)
    discrete: ClassVar[bool] = True  # demand and orders are whole units; evaluation rounds orders
    min_lead_time: ClassVar[int] = 1

    shelf_life: int = 2       # m: periods a unit can be sold, counting the one it arrives in
    issuing: str = "fifo"     # fifo: oldest units sold first; lifo: freshest first
    waste_cost: float = 7.0   # w: cost per expired unit
    max_order: int = 10       # orders 0..max_order in the exact DP and the heuristics

    def __post_init__(self):
        if int(self.shelf_life) != self.shelf_life or self.shelf_life < 1:
            raise ValueError(f"perishable: shelf_life must be a whole number >= 1, got {self.shelf_life!r}")
        if self.issuing not in ISSUING:
            raise ValueError(f"perishable: issuing must be one of {', '.join(ISSUING)}, got {self.issuing!r}")
        if not self.waste_cost >= 0:
            raise ValueError(f"perishable: waste_cost must be >= 0, got {self.waste_cost!r}")
        if int(self.max_order) != self.max_order or self.max_order < 1:
            raise ValueError(f"perishable: max_order must be a whole number >= 1, got {self.max_order!r}")
        self.shelf_life, self.max_order = int(self.shelf_life), int(self.max_order)
        self.waste_cost = float(self.waste_cost)

    @classmethod
    def mixed_instances(cls) -> list[tuple[dict, dict]]:
        return [({"shelf_life": m, "issuing": "fifo", "waste_cost": 10.0, "max_order": 6},
                 {"shelf_life": m + 1, "issuing": "lifo", "waste_cost": 3.0, "max_order": 8}) for m in (2, 3)]

    def param_features(self, batch: ProductBatch, total: Tensor) -> list[Tensor]:
        """The waste cost's share, whether the product issues LIFO, and 1 / its shelf life."""
        issuing = self.param(batch, "issuing")
        lifo = issuing == ISSUING.index("lifo") if isinstance(issuing, Tensor) else torch.tensor(issuing == "lifo")
        w = self.per_product(batch, "waste_cost")
        return [w / (total + w), lifo.to(total).expand(batch.size), 1.0 / self.per_product(batch, "shelf_life")]

    def state_width(self, max_lead_time: int) -> int:
        return max(1, int(max_lead_time)) - 1 + self.shelf_life

    def state_names(self, width: int) -> list[str]:
        transit = width - self.shelf_life
        return ([f"pipeline_{transit - i}" for i in range(transit)]
                + [f"stock_age_{a}" for a in range(self.shelf_life)])

    def setup(self, batch: ProductBatch, width: int) -> Tensor:
        """The one-hot lead-time slot of every product's order [B, W - m + 2]."""
        check_lead_times(self, batch, width)
        self.check_params(batch)
        return lead_time_slots(batch.lead_time, width - self.shelf_life + 1, batch.demand.dtype)

    def issue(self, stock: Tensor, demand: Tensor, issuing: str | Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """Serve ``demand`` [B] from ``stock`` [B, m] (ages 0..m-1) by the issuing rule
        (``issuing``: the problem's, a name, or per product the index in ``ISSUING`` [B]):
        (what is left of each age, the demand left unserved)."""
        issuing = self.issuing if issuing is None else issuing
        if isinstance(issuing, Tensor):  # per product: both orders, each product takes its own
            (fifo, fifo_lost), (lifo, lifo_lost) = self.issue(stock, demand, "fifo"), self.issue(stock, demand, "lifo")
            use = issuing.to(stock.device) == ISSUING.index("lifo")
            return [torch.where(use, b, a) for a, b in zip(fifo, lifo)], torch.where(use, lifo_lost, fifo_lost)
        m = self.shelf_life
        left: list = [None] * m
        wanted = demand
        for age in (range(m - 1, -1, -1) if issuing == "fifo" else range(m)):
            left[age] = torch.relu(stock[:, age] - wanted)
            wanted = torch.relu(wanted - stock[:, age])
        return left, wanted

    def expire(self, left: list[Tensor], life: int | Tensor) -> tuple[list[Tensor], Tensor]:
        """Split what is left of each age [m] after issuing into the ages kept (0..m-2) and
        the units that expire [B]: age ``life - 1`` (``life`` [B]: each product's shelf life,
        the ages from it on kept empty; the constant m: age m - 1)."""
        if not isinstance(life, Tensor):
            return left[: self.shelf_life - 1], left[self.shelf_life - 1]
        return ([torch.where(life - 1 > a, x, 0.0) for a, x in enumerate(left[:-1])],
                sum(torch.where(life - 1 == a, x, 0.0) for a, x in enumerate(left)))

    def step(self, state: Tensor, action: Tensor, demand: Tensor, batch: ProductBatch,
             slots: Tensor) -> Step:
        m = self.shelf_life
        transit = state.shape[1] - m
        order = action[:, 0]
        left, lost = self.issue(state[:, transit:], demand, self.param(batch, "issuing"))
        left, waste = self.expire(left, self.param(batch, "shelf_life"))
        held = sum(left, torch.zeros_like(waste))
        cost = (batch.unit_cost * order + batch.shortage_cost * lost + self.param(batch, "waste_cost") * waste
                + batch.holding_cost * held)
        arriving, pipeline = advance_pipeline(state[:, :transit].flip(1), order, slots)
        next_state = torch.stack([*pipeline.flip(1).unbind(1), arriving, *left], dim=1)
        return Step(next_state, cost, demand - lost, held, lost, waste)

    def dp_space(self, product: ProductBatch, mean: float, std: float):
        """Every coordinate in 0..max_order (each age class and pipeline entry comes from one
        order, so the grid is exact; the ages from the product's shelf life on are empty),
        orders 0..max_order (the product's own)."""
        width = self.state_width(int(product.lead_time[0]))
        top, empty = int(self.param(product, "max_order")), self.shelf_life - int(self.param(product, "shelf_life"))
        return StateSpace(lows=(0,) * width, highs=(top,) * (width - empty) + (0,) * empty,
                          actions=torch.arange(top + 1, dtype=torch.float64)[:, None],
                          actions_are_bounded=True)

    def claimed_properties(self, width: int):
        """Order non-increasing with slope at least -1 in every entry, and more sensitive to younger units
        (docs/problems/perishable.md, Structural properties on DP policies)."""
        names = self.state_names(width)
        props = [Property("order", c, lo=-1.0, hi=0.0) for c in names]
        props += [Property("order", names[j], other=names[j + 1]) for j in range(width - 1)]
        return props

    def default_properties(self, width: int):
        """What the structure penalty enforces by default: the claims the exact DP confirmed
        (docs/structure.md). Under LIFO with m >= 3 only the slope <= 0 holds everywhere; the
        slope bound -1 and the orderings fail in some visited states."""
        props = self.claimed_properties(width)
        if self.issuing == "lifo" and self.shelf_life >= 3:
            props = [Property(p.action, p.coord, hi=0.0) for p in props if p.other is None]
        return props
