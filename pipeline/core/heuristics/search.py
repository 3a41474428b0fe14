"""Integer parameter searches for heuristics, on any cost function of a parameter vector.

``local_search`` walks from a start to a local minimum over unit steps (one coordinate, or
two at once in the same or opposite direction, so that it can follow diagonal valleys such
as those of dual-index levels); ``grid_search`` tries every point of a box. Both memoise:
each cost is an exact policy evaluation, the expensive part.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

Point = tuple[int, ...]


def _neighbours(point: Point) -> list[Point]:
    n = len(point)
    moves = [tuple(s if j == i else 0 for j in range(n)) for i in range(n) for s in (-1, 1)]
    moves += [tuple((a if j == i else b if j == k else 0) for j in range(n))
              for i, k in itertools.combinations(range(n), 2) for a in (-1, 1) for b in (-1, 1)]
    return [tuple(p + m for p, m in zip(point, d)) for d in moves]


def local_search(cost: Callable[[Point], float], start: Sequence[int],
                 lows: Sequence[int] | None = None, highs: Sequence[int] | None = None,
                 max_evaluations: int = 2000) -> tuple[Point, float]:
    """Steepest descent over unit steps inside ``[lows, highs]``; returns (point, cost)."""
    n = len(start)
    lows = tuple(lows) if lows is not None else (0,) * n
    highs = tuple(highs) if highs is not None else (10 ** 9,) * n
    seen: dict[Point, float] = {}

    def f(p: Point) -> float:
        if p not in seen:
            if len(seen) >= max_evaluations:
                raise RuntimeError(f"local_search: no local minimum after {max_evaluations} evaluations")
            seen[p] = cost(p)
        return seen[p]

    best = tuple(min(max(int(s), lo), hi) for s, lo, hi in zip(start, lows, highs))
    while True:
        around = [p for p in _neighbours(best) if all(lo <= v <= hi for v, lo, hi in zip(p, lows, highs))]
        nxt = min(around, key=f, default=best)
        if not around or f(nxt) >= f(best):
            return best, f(best)
        best = nxt


def grid_search(cost: Callable[[Point], float], ranges: Sequence[Sequence[int]]) -> tuple[Point, float]:
    """The best point of a full grid (``ranges``: the values of each coordinate)."""
    values = {p: cost(p) for p in itertools.product(*ranges)}
    best = min(values, key=values.get)
    return best, values[best]
