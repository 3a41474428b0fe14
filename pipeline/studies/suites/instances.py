"""What every benchmark suite shares: an instance's key, and the exact DP's inputs for it."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core import dp
from pipeline.core.batch import ProductBatch
from pipeline.core.protocols import Problem


def instance_key(instance: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in instance.items())


@dataclass
class DPInstance:
    problem: Problem
    product: ProductBatch
    space: dp.StateSpace
    pmf: Tensor
    discount: float = 1.0
    initial: Tensor | None = None  # start law [S] of a discounted criterion

    @property
    def entries(self) -> int:
        return self.space.size * len(self.space.actions) * len(self.pmf)
