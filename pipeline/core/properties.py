"""Structural properties of policies as data (bounds on and orderings between entries of an action's
Jacobian in the state), and their check on policy tables by forward differences: docs/structure.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Property:
    action: str
    coord: str
    lo: float = -float("inf")   # bound: lo <= d action / d coord <= hi
    hi: float = float("inf")
    other: str | None = None    # ordering: d action / d coord <= d action / d other

    @property
    def slug(self) -> str:
        """A metric-name-safe name: ``order.on_hand.bound``, ``order.pipeline_1.le.on_hand``."""
        if self.other is not None:
            return f"{self.action}.{self.coord}.le.{self.other}"
        return f"{self.action}.{self.coord}.bound"

    def __str__(self) -> str:
        d = f"d{self.action}/d{self.coord}"
        if self.other is not None:
            return f"{d} <= d{self.action}/d{self.other}"
        return f"{self.lo:g} <= {d} <= {self.hi:g}"


_DERIVATIVE = r"d(\w+)/d(\w+)"
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)"


def parse_property(text: str) -> Property:
    """The inverse of ``str(Property)``: ``"-1 <= dorder/don_hand <= 0"`` (a bound) or
    ``"dorder/dpipeline_1 <= dorder/don_hand"`` (an ordering)."""
    t = " ".join(text.split())
    bound = re.fullmatch(rf"{_NUMBER} <= {_DERIVATIVE} <= {_NUMBER}", t)
    if bound:
        lo, action, coord, hi = bound.groups()
        return Property(action, coord, lo=float(lo), hi=float(hi))
    order = re.fullmatch(rf"{_DERIVATIVE} <= {_DERIVATIVE}", t)
    if order and order.group(1) == order.group(3):
        return Property(order.group(1), order.group(2), other=order.group(4))
    raise ValueError(f"cannot read property {text!r}; write 'LO <= dACTION/dSTATE <= HI' or "
                     "'dACTION/dSTATE <= dACTION/dOTHER'")


def forward_differences(table: Tensor, axis: int) -> Tensor:
    """table[..., s_axis + 1, ...] - table[..., s_axis, ...]; the last slice along the
    axis (no neighbour) is NaN."""
    diff = torch.full_like(table, float("nan"), dtype=torch.float64)
    n = table.shape[axis]
    diff.narrow(axis, 0, n - 1).copy_(table.narrow(axis, 1, n - 1).double()
                                      - table.narrow(axis, 0, n - 1).double())
    return diff


@dataclass
class CheckResult:
    prop: Property
    states: int        # states checked
    holds: float       # share of them where the property holds
    worst: float       # largest violation (0 when it always holds)


def check_table(table: Tensor, state_names: list[str], action_names: list[str],
                properties: list[Property], mask: Tensor | None = None,
                tol: float = 1e-9) -> list[CheckResult]:
    """Check properties on a policy table shaped ``grid shape + [A]`` (``Solution.table``).

    ``mask`` (grid shape, bool) restricts the check to some states, e.g. those with
    stationary probability above a threshold."""
    grid = table.shape[:-1]
    mask = torch.ones(grid, dtype=torch.bool) if mask is None else mask.reshape(grid)
    out = []
    for prop in properties:
        a = table[..., action_names.index(prop.action)]
        d = forward_differences(a, state_names.index(prop.coord))
        if prop.other is None:
            valid = mask & ~torch.isnan(d)
            excess = torch.maximum(prop.lo - d, d - prop.hi).clamp_min(0)
        else:
            d2 = forward_differences(a, state_names.index(prop.other))
            valid = mask & ~torch.isnan(d) & ~torch.isnan(d2)
            excess = (d - d2).clamp_min(0)
        excess = excess[valid]
        n = int(valid.sum())
        out.append(CheckResult(prop, n, float((excess <= tol).double().mean()) if n else float("nan"),
                               float(excess.max()) if n else 0.0))
    return out


def format_checks(results: list[CheckResult]) -> str:
    return "\n".join(f"{str(r.prop):45s} holds in {100 * r.holds:6.2f}% of {r.states} states"
                     + (f" (worst violation {r.worst:g})" if r.worst > 0 else "") for r in results)
