"""What every benchmark suite shares: an instance's key, its notes, and the exact DP's inputs for it."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core import dp
from pipeline.core.batch import ProductBatch
from pipeline.config import PROJECT_ROOT
from pipeline.core.protocols import Problem
from pipeline.reporting.report_blocks import read_block

NOTES_DOC = PROJECT_ROOT / "docs" / "benchmarks.md"


def instance_key(instance: dict) -> str:
    return ";".join(f"{k}={v}" for k, v in instance.items())


def suite_notes(problem: str) -> str:
    """What the suite of ``problem`` reproduces: the paragraph above its table in
    docs/benchmarks.md (the block ``benchmark:notes:<problem>``); "" when it has none."""
    if not NOTES_DOC.exists():  # an installed package carries no docs
        return ""
    return read_block(NOTES_DOC.read_text(), f"benchmark:notes:{problem}") or ""


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
