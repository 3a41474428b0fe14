"""Integer parameter searches: known minima, bounds, agreement with a full grid search, and
the capped base-stock parameters of a real lost-sales instance."""
import numpy as np
import pytest

from pipeline.studies.suites.lost_sales_suite import product
from pipeline.core.heuristics import lost_sales_heuristics as H
from pipeline.core.heuristics.search import grid_search, local_search


def counted(f):
    """f with a count of its distinct evaluations."""
    seen = set()

    def g(p):
        seen.add(p)
        return f(p)
    g.seen = seen
    return g


def test_one_parameter_convex_minimum_from_either_side():
    f = lambda p: (p[0] - 7) ** 2 + 0.5
    assert local_search(f, (0,)) == ((7,), 0.5)
    assert local_search(f, (30,)) == ((7,), 0.5)


def test_unimodal_non_convex_one_parameter():
    f = lambda p: -1.0 / (1 + abs(p[0] - 12)) ** 0.5
    assert local_search(f, (3,))[0] == (12,)


def test_bounds_are_respected():
    f = counted(lambda p: (p[0] - 7) ** 2 + (p[1] + 3) ** 2)
    point, cost = local_search(f, (9, 9), lows=(8, 2), highs=(20, 20))
    assert point == (8, 2) and cost == 1 + 25
    assert all(8 <= a <= 20 and 2 <= b <= 20 for a, b in f.seen)
    assert local_search(lambda p: -p[0], (0,), highs=(5,)) == ((5,), -5)
    assert local_search(lambda p: p[0], (4,)) == ((0,), 0)  # default lower bound 0


def test_separable_two_parameter_minimum():
    assert local_search(lambda p: (p[0] - 3) ** 2 + 2 * (p[1] - 11) ** 2, (0, 0)) == ((3, 11), 0)


@pytest.mark.parametrize("f, start, best", [
    (lambda p: 100 * (p[0] - p[1]) ** 2 + (p[0] + p[1] - 20) ** 2, (0, 0), (10, 10)),   # diagonal
    (lambda p: 100 * (p[0] + p[1] - 20) ** 2 + (p[0] - p[1] - 6) ** 2, (10, 10), (13, 7)),  # anti-diagonal
])
def test_narrow_diagonal_valleys_are_followed(f, start, best):
    """Every single-coordinate step out of the start costs more; only the paired steps
    descend the valley."""
    assert all(f(n) > f(start) for n in [(start[0] + 1, start[1]), (start[0] - 1, start[1]),
                                         (start[0], start[1] + 1), (start[0], start[1] - 1)])
    assert local_search(f, start)[0] == best


def test_agrees_with_grid_search_on_random_discrete_convex_quadratics():
    """L-natural-convex quadratics (non-positive interaction, diagonally dominant): a local
    minimum over unit and paired steps is global, so both searches agree."""
    rng = np.random.default_rng(0)
    box = [range(25), range(25)]
    for _ in range(20):
        a, b = rng.uniform(0.5, 5, size=2)
        c = rng.uniform(0, min(a, b))
        x0, y0 = rng.uniform(2, 22, size=2)
        def f(p, a=a, b=b, c=c, x0=x0, y0=y0):
            return a * (p[0] - x0) ** 2 + b * (p[1] - y0) ** 2 - 2 * c * (p[0] - x0) * (p[1] - y0)
        start = tuple(int(v) for v in rng.integers(0, 25, size=2))
        assert local_search(f, start, highs=(24, 24)) == grid_search(f, box)


def test_gives_up_after_too_many_evaluations():
    with pytest.raises(RuntimeError, match="no local minimum"):
        local_search(lambda p: -p[0], (0,), max_evaluations=50)


def test_capped_base_stock_search_matches_a_full_grid_on_a_real_instance():
    """p = 9, L = 2: local search on exact costs finds the same (S, r) as trying every
    point of a box around it."""
    inst = H.Instance.of(product(9, 2))
    cost = counted(lambda s: H.policy_cost(inst, H.CappedBaseStockPolicy(*s)))
    local, local_cost = H.best_capped_base_stock(inst)
    full, full_cost = grid_search(cost, [range(14, 26), range(3, 13)])
    assert local == full and local_cost == pytest.approx(full_cost, abs=1e-9)
    assert 14 < full[0] < 25 and 3 < full[1] < 12  # an interior point of the box


def test_vector_base_stock_search_leaves_the_plateau_of_a_slack_middle_level():
    """p = 19, L = 2: with s_1 slack the cost is flat in s_1 (capped base-stock); the search
    walks down that plateau and finds the box's best levels, where s_1 binds and beats the
    best capped base-stock."""
    inst = H.Instance.of(product(19, 2))
    levels, cost = H.best_vector_base_stock(inst)
    full, full_cost = grid_search(lambda s: H.policy_cost(inst, H.VectorBaseStockPolicy(s)),
                                  [range(19, 24), range(11, 18), range(5, 10)])
    assert levels == full and cost == pytest.approx(full_cost, abs=1e-7)
    assert cost < H.best_capped_base_stock(inst)[1] - 0.01
