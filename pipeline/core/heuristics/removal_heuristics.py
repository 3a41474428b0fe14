"""Heuristics for joint procurement and removal: interval-stock (``IntervalStockPolicy``) and base-stock,
with the searches for their levels. Definitions: docs/problems/removal.md, Heuristics.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pipeline.core.baselines import per_product
from pipeline.core.batch import ProductBatch
from pipeline.core.heuristics.search import local_search
from pipeline.core.protocols import Problem


@dataclass
class IntervalStockPolicy:
    """Order up to ``lower``, remove down to ``upper`` (per product [B]). With ``product_ids``
    the levels belong to those products and any batch of them gets its own; without, they
    apply position by position."""

    problem: Problem
    lower: Tensor
    upper: Tensor
    product_ids: np.ndarray | None = None

    def __post_init__(self):
        if bool((self.upper < self.lower).any()):
            raise ValueError("interval-stock: every upper level must be >= its lower level")

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Tensor:
        levels = torch.stack([self.lower, self.upper], dim=1)
        return per_product(levels, self.product_ids, batch, "interval-stock levels")

    def act(self, levels: Tensor, t: int, state: Tensor) -> Tensor:
        """[order, removal] per product."""
        position = self.problem.inventory_position(state)
        order = torch.relu(levels[:, 0] - position)
        removal = torch.minimum(torch.relu(position - levels[:, 1]), state[:, 0])
        return torch.stack([order, removal], dim=1)


def best_interval_stock(cost: Callable[[int, int], float], start: tuple[int, int],
                        top: int) -> tuple[tuple[int, int], float]:
    """The levels ``(a, b)`` of a local minimum of ``cost(a, b)`` found from ``start``, with
    ``0 <= a <= top`` and ``0 <= b - a <= top``; searched as ``(a, b - a)`` so that
    ``b >= a`` is a box constraint."""
    a0, b0 = start
    (a, width), value = local_search(lambda p: cost(p[0], p[0] + p[1]), (a0, max(b0 - a0, 0)),
                                     lows=(0, 0), highs=(top, top))
    return (a, a + width), value


def best_base_stock(cost: Callable[[int], float], start: int) -> tuple[int, float]:
    """The level of a local minimum of ``cost(level)`` found from ``start``."""
    (level,), value = local_search(lambda p: cost(p[0]), (start,))
    return level, value
