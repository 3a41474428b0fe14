"""Inventory problems behind the ``pipeline.core.protocols.Problem`` protocol; ``PROBLEMS`` is the
registry. Adding a problem: docs/architecture.md, Seams.
"""
from __future__ import annotations

import dataclasses

from pipeline.core.problems.base import Step
from pipeline.core.problems.dual_sourcing import DualSourcing
from pipeline.core.problems.lost_sales import LostSales
from pipeline.core.problems.perishable import Perishable
from pipeline.core.problems.removal import Removal

PROBLEMS = {cls.name: cls for cls in (LostSales, Perishable, DualSourcing, Removal)}


def get_problem(name: str, params: dict | None = None):
    """The problem ``name`` with its population-level ``params`` (``problem.params``)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; known: {', '.join(sorted(PROBLEMS))}")
    cls = PROBLEMS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params or {}) - set(allowed))
    if unknown:
        raise ValueError(f"problem {name} has no parameter {unknown[0]!r}; "
                         f"its parameters: {', '.join(allowed) or 'none'}")
    return cls(**dict(params or {}))


__all__ = ["PROBLEMS", "DualSourcing", "LostSales", "Perishable", "Removal", "Step", "get_problem"]
