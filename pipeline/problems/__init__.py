"""Inventory problems: data plus a step function behind one small interface.

A problem provides ``state_width``, ``state_names``, ``initial_state``, ``arrival_slots``,
``step`` and ``inventory_position``; the rollout, the policies and the evaluator use
nothing else. Adding a problem means adding one module here and one YAML in conf/problem.
"""
from __future__ import annotations

from pipeline.problems.lost_sales import LostSales, Step

PROBLEMS = {"lost_sales": LostSales}


def get_problem(name: str):
    try:
        return PROBLEMS[name]()
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; known: {', '.join(sorted(PROBLEMS))}") from None


__all__ = ["PROBLEMS", "LostSales", "Step", "get_problem"]
