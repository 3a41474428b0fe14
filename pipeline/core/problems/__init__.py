"""Inventory problems: data plus a step function behind one small interface, the
``pipeline.core.protocols.Problem`` protocol. ``PROBLEMS`` is the registry: the config,
the benchmark suites, the performance and penalty benchmarks and the contract tests
(``tests/test_contracts.py``) all take their problems from it.

Adding a problem ``NAME``:

1. a module here with a dataclass ``class Name(ProblemBase)`` (``pipeline.core.problems.base``;
   its fields are the population-level parameters, each with a default) implementing every
   member of ``Problem``, ``name = "NAME"``; override ``default_properties`` only when the
   exact DP refutes some of its ``claimed_properties``;
2. its line in ``PROBLEMS`` below;
3. ``conf/problem/NAME.yaml``: ``problem.name``, its ``params`` and the ``data`` of its
   products.

Then ``tests/test_contracts.py`` and ``tests/test_problems.py`` check it, and the
performance grid (``benchmarks/perf.py``) and the penalty benchmark
(``benchmarks/penalty_step.py``) run it at its YAML's defaults. A benchmark suite is
optional: a module ``pipeline/studies/suites/NAME_suite.py`` (what it provides: that
package's docstring), found by its name, and ``conf/suite/NAME.yaml``; its heuristic
policies go in ``pipeline/core/heuristics/NAME_heuristics.py``.
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
