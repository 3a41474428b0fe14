"""What every problem shares: the step record, the lead-time routing of orders and ``ProblemBase``
(per-product parameters through ``param``). What a problem is: docs/architecture.md, Seams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.properties import Property


class ProblemBase:
    """What every problem shares: defaults for the empty start, inventory position and default
    properties; and per-product parameters. The dataclass fields are population constants; a
    ``ProductBatch.params`` column of the same name gives one value per product instead.
    For a ``structural`` field (it sets the state's layout or the DP's grid) the constant is
    the largest value and a column gives each product a value up to it;
    ``choices`` maps a field whose values are names to the names allowed."""

    structural: ClassVar[tuple[str, ...]] = ()
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    n_param_features: ClassVar[int] = 0  # how many ``param_features`` the network gets

    def param(self, batch: ProductBatch, name: str):
        """Parameter ``name``: the batch's column [B] (``_resolve``), resolved once per column and
        device (a rollout asks every period), or the population constant where there is none."""
        column = batch.params.get(name)
        if column is None:
            return getattr(self, name)
        cached = self.__dict__.setdefault("_resolved", {}).get(name)
        if cached is None or cached[0] is not column or cached[1].device != batch.demand.device:
            cached = self._resolved[name] = (column, self._resolve(batch, name, column))
        return cached[1]

    def _resolve(self, batch: ProductBatch, name: str, column) -> Tensor:
        """A column of ``param``, checked and converted (a choice to indices, structural to whole numbers)."""
        if name in self.structural:
            column, top = torch.as_tensor(column).round().long(), getattr(self, name)
            if bool((column > top).any()):
                raise ValueError(f"{self.name}: {name} {int(column.max())} in a column exceeds problem.params.{name} "
                                 f"= {top}, the largest value (it sets the state's layout or the DP's grid)")
            return column
        if name in self.choices:
            allowed = np.asarray(self.choices[name])
            match = np.asarray(column)[:, None] == allowed[None, :]
            if not match.any(axis=1).all():
                raise ValueError(f"{self.name}: {name} must be one of {', '.join(allowed)}")
            return torch.as_tensor(match.argmax(axis=1), device=batch.demand.device)
        return torch.as_tensor(column, device=batch.demand.device)

    def param_features(self, batch: ProductBatch, total: Tensor) -> list[Tensor]:
        """Scale-free features [B] of the problem parameters for the policy network's static
        inputs (``total`` [B]: the product's costs and price summed); none by default. Never
        a parameter of the demand law."""
        return []

    def per_product(self, batch: ProductBatch, name: str) -> Tensor:
        """``param`` as a [B] tensor of the batch's dtype."""
        return torch.as_tensor(self.param(batch, name), dtype=batch.demand.dtype,
                               device=batch.demand.device).expand(batch.size)

    def check_params(self, batch: ProductBatch) -> None:
        """Refuse a batch whose structural parameters exceed the population constants."""
        for name in self.structural:
            self.param(batch, name)

    def initial_state(self, batch: ProductBatch, width: int) -> Tensor:
        """An empty system: nothing on hand or in transit [B, width]."""
        return batch.demand.new_zeros(batch.size, width)

    def inventory_position(self, state: Tensor) -> Tensor:
        """Every unit on hand (net of backlog) and in transit: what base-stock orders up to [B]."""
        return state.sum(dim=1)

    def default_properties(self, width: int) -> list[Property]:
        """The properties the structure penalty enforces by default: the claimed ones, unless
        a problem overrides this with the subset its exact DP confirmed (docs/structure.md)."""
        return self.claimed_properties(width)

    @classmethod
    def mixed_instances(cls) -> list[tuple[dict, dict]]:
        """Pairs of ``problem.params`` settings, each pair differing in every parameter, the
        structural ones no larger in the first (the contract test runs the products of both
        in one batch, their parameters given per product, the constants the larger ones)."""
        return [({}, {})]


@dataclass
class Step:
    """What one period produced, per product [B]."""

    next_state: Tensor
    cost: Tensor   # every cost of the period (purchase, holding, shortage, waste, ...)
    sales: Tensor  # units sold (revenue in the reward formulation is price * sales)
    held: Tensor   # units held at the end of the period
    lost: Tensor   # demand not served this period (lost, or backlogged)
    waste: Tensor  # units that expired or were removed


def lead_time_slots(lead_time: Tensor, width: int, dtype) -> Tensor:
    """One-hot [B, width + 1] routing an order by its product's lead time: column 0
    (L = 0) means at once, column j arrives in j periods."""
    slots = torch.arange(width + 1, device=lead_time.device)
    return (slots[None, :] == lead_time[:, None]).to(dtype)


def shift_pipeline(pipeline: Tensor, order: Tensor, slots: Tensor) -> Tensor:
    """Shift a pipeline [B, P] (entry j arrives in j + 1 periods) by one period and add this
    period's order in its slot (``slots`` [B, P + 2] from ``lead_time_slots(lead_time, P + 1)``,
    column 0 unused). Returns [B, P + 1]: column 0 arrives next period, the rest is the
    pipeline then."""
    return F.pad(pipeline, (0, 1)) + slots[:, 1:] * order[:, None]


def advance_pipeline(pipeline: Tensor, order: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
    """``shift_pipeline`` split into (what arrives next period [B], the remaining pipeline [B, P])."""
    shifted = shift_pipeline(pipeline, order, slots)
    return shifted[:, 0], shifted[:, 1:]


def check_lead_times(problem, batch: ProductBatch, width: int, minimum: int | Tensor | None = None) -> None:
    """Refuse lead times below ``minimum`` ([B]: each product's own) or too long for ``width``."""
    minimum = problem.min_lead_time if minimum is None else minimum
    lo, hi = int(batch.lead_time.min()), int(batch.lead_time.max())
    if bool((batch.lead_time < minimum).any()) or problem.state_width(hi) > width:
        need = minimum if isinstance(minimum, int) else "the product's own minimum"
        raise ValueError(f"{problem.name}: lead times {lo}..{hi} need lead_time >= "
                         f"{need} and a state of width >= {problem.state_width(hi)}, "
                         f"got width {width}")


@dataclass
class StateSpace:
    """A finite grid of integer states (``lows[i] <= state[i] <= highs[i]``) and the
    feasible action vectors ``actions`` [K, A]."""

    lows: tuple[int, ...]
    highs: tuple[int, ...]
    actions: Tensor
    actions_are_bounded: bool = False  # True: the largest actions are part of the problem (not a truncation)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(hi - lo + 1 for lo, hi in zip(self.lows, self.highs))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def states(self) -> Tensor:
        """Every state [S, W] (float64), in row-major order of ``shape``."""
        axes = [torch.arange(lo, hi + 1, dtype=torch.float64) for lo, hi in zip(self.lows, self.highs)]
        return torch.cartesian_prod(*axes).reshape(-1, len(axes))

    def index(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Flat index of each (rounded) state, clamped into the grid, and whether it was clamped."""
        s = state.round().long()
        lows = torch.tensor(self.lows, device=s.device)
        highs = torch.tensor(self.highs, device=s.device)
        inside = torch.clamp(s, lows, highs)
        clamped = (inside != s).any(dim=-1)
        strides = torch.tensor([math.prod(self.shape[i + 1:]) for i in range(len(self.shape))],
                               device=s.device)
        return ((inside - lows) * strides).sum(dim=-1), clamped
