"""Perishable inventory (docs/problems/perishable.md): the simulator against hand-computed trajectories, its
gradient, the exact DP against De Moor et al.'s published policy tables, the structural
properties on DP policies, and the heuristics and their searches."""
import itertools

import numpy as np
import pytest
import torch
from conftest import make_batch

from pipeline.core import dp
from pipeline.core import properties as structure
from pipeline.studies.suites import perishable_suite as suite
from pipeline.core.demand import sample_demand
from pipeline.core.heuristics.perishable_heuristics import (
    BspLowEw,
    Instance,
    PerishableBaseStock,
    base_stock_order,
    best_base_stock,
    best_bsp_low_ew,
    bsp_low_ew_order,
    expected_waste,
    product_pmf,
)
from pipeline.studies.suites.dp_structure import check_instance
from pipeline.core.heuristics.search import grid_search
from pipeline.core.problems.perishable import Perishable
from pipeline.core.rollout import rollout


class FixedOrders:
    """A policy that places given orders [B, T]."""

    def __init__(self, orders):
        self.orders = torch.as_tensor(orders)  # float64 orders stay float64 (gradient test)
        if self.orders.ndim == 1:
            self.orders = self.orders[None, :]

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return self.orders[:, t].to(state.dtype)


def run(problem, demand, orders, lead_time, width=None):
    batch = make_batch(demand, lead_time=lead_time, h=1.0, p=5.0, c=3.0)
    width = width or problem.state_width(int(batch.lead_time.max()))
    return rollout(problem, FixedOrders(orders), batch, 0, batch.periods, width, record_states=True)


# ------------------------------------------------------------------------------ simulator


def test_fifo_shelf_life_two_lead_time_one_by_hand():
    # state [stock_age_0, stock_age_1]; the order arrives next period as age 0
    traj = run(Perishable(2, "fifo", 7.0), [3, 2, 2, 6], [5, 4, 0, 0], lead_time=1)
    assert traj.states[0].tolist() == [[0, 0], [5, 0], [4, 3], [0, 4]]
    # t1: sell 2 of the 5 fresh, hold 3; t2: sell 2 of the 3 old, 1 expires, hold the 4 fresh;
    # t3: sell the 4 (now old), 2 lost
    assert traj.sales[0].tolist() == [0, 2, 2, 4]
    assert traj.lost[0].tolist() == [3, 0, 0, 2]
    assert traj.waste[0].tolist() == [0, 0, 1, 0]
    assert traj.held[0].tolist() == [0, 3, 4, 0]
    assert traj.cost[0].tolist() == [3 * 5 + 5 * 3, 3 * 4 + 1 * 3, 7 * 1 + 1 * 4, 5 * 2]


def test_lifo_shelf_life_two_lead_time_one_by_hand():
    traj = run(Perishable(2, "lifo", 7.0), [3, 2, 2, 6], [5, 4, 0, 0], lead_time=1)
    # t2: the 2 sold are fresh, so all 3 old units expire and 2 fresh are held
    assert traj.states[0].tolist() == [[0, 0], [5, 0], [4, 3], [0, 2]]
    assert traj.sales[0].tolist() == [0, 2, 2, 2]
    assert traj.lost[0].tolist() == [3, 0, 0, 4]
    assert traj.waste[0].tolist() == [0, 0, 3, 0]
    assert traj.held[0].tolist() == [0, 3, 2, 0]
    assert traj.cost[0].tolist() == [15 + 15, 12 + 3, 7 * 3 + 2, 5 * 4]


def test_lead_time_two_order_serves_demand_two_periods_later():
    # state [pipeline_1, stock_age_0, stock_age_1]
    traj = run(Perishable(2, "fifo", 7.0), [1, 1, 2, 5], [3, 4, 0, 0], lead_time=2)
    assert traj.states[0].tolist() == [[0, 0, 0], [3, 0, 0], [4, 3, 0], [0, 4, 1]]
    assert traj.sales[0].tolist() == [0, 0, 2, 5]
    assert traj.lost[0].tolist() == [1, 1, 0, 0]
    assert traj.waste[0].tolist() == [0, 0, 0, 0]


def test_units_age_through_the_shelf_life_then_expire():
    # m = 3: 6 units arrive, one is sold in each of three periods, the 3 left expire
    for issuing in ("fifo", "lifo"):
        traj = run(Perishable(3, issuing, 7.0), [0, 1, 1, 1], [6, 0, 0, 0], lead_time=1)
        assert traj.states[0].tolist() == [[0, 0, 0], [6, 0, 0], [0, 5, 0], [0, 0, 4]]
        assert traj.waste[0].tolist() == [0, 0, 0, 3]
        assert traj.held[0].tolist() == [0, 5, 4, 0]


def test_gradient_of_rollout_cost_matches_finite_differences():
    problem = Perishable(3, "fifo", 7.0)
    batch = make_batch([[4, 3, 6, 2, 5, 4, 1, 7], [2, 5, 3, 4, 0, 6, 3, 2]], lead_time=[1, 2],
                       h=1.0, p=5.0, c=3.0).to("cpu", torch.float64)
    base = 7 * torch.rand(2, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def total_cost(orders):
        return rollout(problem, FixedOrders(orders), batch, 0, 8, 4).cost.sum()

    orders = base.clone().requires_grad_(True)
    total_cost(orders).backward()
    eps = 1e-6
    for i, t in [(0, 0), (0, 3), (0, 6), (1, 0), (1, 2), (1, 5)]:
        up, down = base.clone(), base.clone()
        up[i, t] += eps
        down[i, t] -= eps
        fd = (total_cost(up) - total_cost(down)) / (2 * eps)
        assert float(orders.grad[i, t]) == pytest.approx(float(fd), abs=1e-6)
    assert bool((orders.grad != 0).any()) and bool((orders.grad != 3.0).any())  # costs beyond c flow back


def test_state_layout_and_parameter_checks():
    problem = Perishable(2, "fifo", 7.0)
    assert problem.state_width(2) == 3
    assert problem.state_names(4) == ["pipeline_2", "pipeline_1", "stock_age_0", "stock_age_1"]
    assert problem.inventory_position(torch.tensor([[1.0, 2.0, 3.0]])).tolist() == [6.0]
    with pytest.raises(ValueError, match="issuing"):
        Perishable(issuing="lilo")
    with pytest.raises(ValueError, match="shelf_life"):
        Perishable(shelf_life=0)
    with pytest.raises(ValueError, match="lead times 0..0"):
        run(problem, [1, 2], [0, 0], lead_time=0, width=2)


# ------------------------------------------------------------------------------ exact DP

# De Moor et al. (2022), m = 2, L = 1, w = 7: rows freshest 8..0, columns oldest 0..8
DE_MOOR_FIFO = [[1, 0, 0, 0, 0, 0, 0, 0, 0],
                [1, 1, 0, 0, 0, 0, 0, 0, 0],
                [2, 1, 1, 0, 0, 0, 0, 0, 0],
                [2, 2, 1, 1, 0, 0, 0, 0, 0],
                [3, 2, 2, 1, 1, 1, 1, 0, 0],
                [3, 3, 2, 2, 1, 1, 1, 1, 1],
                [4, 3, 3, 3, 2, 2, 2, 2, 2],
                [4, 4, 3, 3, 3, 3, 3, 3, 3],
                [4, 4, 4, 4, 4, 4, 4, 4, 4]]
DE_MOOR_LIFO = [[q] * 9 for q in (0, 0, 0, 0, 1, 2, 3, 3, 3)]


def scenario_a(m, L, w, issuing):
    return Instance.of(suite.instance_problem({"m": m, "L": L, "w": w, "issuing": issuing}), suite.product(L))


@pytest.fixture(scope="module")
def de_moor():
    return {issuing: scenario_a(2, 1, 7, issuing) for issuing in ("fifo", "lifo")}


def published_view(solution):
    """The order table as De Moor et al. print it: freshest 8..0 down, oldest 0..8 across."""
    return solution.table[..., 0].long()[:9, :9].flip(0).tolist()


@pytest.mark.parametrize("issuing, table", [("fifo", DE_MOOR_FIFO), ("lifo", DE_MOOR_LIFO)])
def test_discounted_value_iteration_reproduces_de_moor_tables_exactly(de_moor, issuing, table):
    solution = dp.solve(de_moor[issuing].trans, discount=0.99, tol=1e-6)
    assert published_view(solution) == table


def test_average_cost_optimum_differs_from_the_discounted_one_in_one_fifo_cell(de_moor):
    average = suite.optimum(de_moor["fifo"])
    view = published_view(average)
    differ = [(8 - r, c) for r, c in itertools.product(range(9), range(9)) if view[r][c] != DE_MOOR_FIFO[r][c]]
    assert differ == [(3, 4)] and view[5][4] == 2  # freshest 3, oldest 4: order 2, not 1
    assert average.average_cost == pytest.approx(14.954418, abs=1e-5)
    assert published_view(suite.optimum(de_moor["lifo"])) == DE_MOOR_LIFO
    assert suite.optimum(de_moor["lifo"]).average_cost == pytest.approx(15.920610, abs=1e-5)


@pytest.mark.parametrize("issuing, level", [("lifo", 5), ("fifo", 7)])
def test_best_constant_base_stock_levels_are_de_moors_by_average_cost(de_moor, issuing, level):
    inst = de_moor[issuing]
    assert best_base_stock(inst)[0] == (level,)
    costs = {S: inst.average_cost(base_stock_order(inst.position, S, 10)) for S in range(21)}
    assert min(costs, key=costs.get) == level


def test_a_per_product_shelf_life_under_a_longer_constant_is_the_shorter_instance(de_moor):
    """m_i = 2 and max_order 10 as columns under the constants m = 3 and 12: the exact DP's
    grid keeps age 2 empty and orders 0..10, and the optimum, the expected waste, the best
    base-stock level and the BSP-low-EW table are those of the m = 2 instance."""
    inst = de_moor["fifo"]
    one = suite.product(1)
    one.params = {"shelf_life": torch.tensor([2.0]), "max_order": torch.tensor([10.0])}
    wide = Instance.of(Perishable(3, "fifo", 7.0, max_order=12), one)
    assert wide.trans.space.highs == inst.trans.space.highs + (0,)
    assert torch.equal(wide.trans.space.actions, inst.trans.space.actions)
    assert suite.optimum(wide).average_cost == pytest.approx(suite.optimum(inst).average_cost, abs=1e-12)
    assert torch.equal(wide.waste, inst.waste) and best_base_stock(wide) == best_base_stock(inst)
    assert torch.equal(dp.policy_choice(wide.trans.space, BspLowEw(wide.problem, 5, 6, 7), one),
                       dp.policy_choice(inst.trans.space, BspLowEw(inst.problem, 5, 6, 7), inst.product))


def test_discounted_cost_from_an_empty_start_prefers_six_for_fifo(de_moor):
    """The criterion matters: discounted from the empty state the best FIFO level is 6."""
    inst = de_moor["fifo"]
    value = {S: float(dp.solve(inst.trans, 0.99, fixed=base_stock_order(inst.position, S, 10).long(),
                               tol=1e-6).values[0]) for S in (5, 6, 7, 8)}
    assert min(value, key=value.get) == 6 and value[7] - value[6] < 0.1


# (m, L, issuing): share of states where each claimed property holds on the average-cost
# optimal table, in claimed_properties order (bounds per coordinate, then orderings), over
# the whole grid away from its upper edges and over the states with stationary probability
# above 1e-6. FIFO: every claim holds everywhere. LIFO with m = 3: the slope reaches -2 and
# the order can be more sensitive to the middle age than to the freshest.
PROPERTY_SHARES = {
    (2, 1, "fifo"): ([1, 1, 1], [1, 1, 1]),
    (2, 1, "lifo"): ([1, 1, 1], [1, 1, 1]),
    (2, 2, "fifo"): ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1]),
    (3, 1, "fifo"): ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1]),
    (3, 1, "lifo"): ([1188 / 1210, 1144 / 1210, 1, 1034 / 1100, 1], [38 / 42, 32 / 42, 1, 29 / 42, 1]),
}


@pytest.mark.parametrize("key", sorted(PROPERTY_SHARES))
def test_claimed_structural_properties_on_dp_policies(key):
    m, L, issuing = key
    checks = check_instance(suite.dp_instance({"m": m, "L": L, "w": 7, "issuing": issuing}))
    width = Perishable(m).state_width(L)
    for results, expected in zip(checks, PROPERTY_SHARES[key]):
        assert len(results) == 2 * width - 1
        assert [r.holds for r in results] == pytest.approx(expected, abs=1e-9), structure.format_checks(results)


# ------------------------------------------------------------------------------ heuristics


def test_expected_waste_matches_brute_force_over_two_periods():
    """Every pair of demands run through the simulator itself with zero orders."""
    problem = Perishable(3, "lifo", 7.0)
    one = suite.product(2).to("cpu", torch.float64)
    pmf = product_pmf(one)
    states = torch.tensor([[2.0, 5.0, 1.0, 3.0], [0.0, 1.0, 4.0, 6.0], [7.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    fast = expected_waste(problem, states, pmf.expand(3, -1), torch.tensor([2, 2, 2]))
    p = pmf[0]
    pairs = torch.cartesian_prod(torch.arange(len(p)), torch.arange(len(p)))  # [D^2, 2]
    weight = p[pairs[:, 0]] * p[pairs[:, 1]]
    many = one.select([0] * len(pairs))
    setup = problem.setup(many, 4)
    for s, got in zip(states, fast):
        state, waste = s.expand(len(pairs), -1), 0.0
        for period in (0, 1):
            step = problem.step(state, torch.zeros(len(pairs), 1, dtype=torch.float64),
                                pairs[:, period].double(), many, setup)
            waste, state = waste + step.waste, step.next_state
        assert float(got) == pytest.approx(float(weight @ waste), abs=1e-10)
    # FIFO, L = 1: E (oldest - D)^+ by hand
    fifo = expected_waste(Perishable(2, "fifo"), torch.tensor([[3.0, 2.0]], dtype=torch.float64),
                          pmf[:1], torch.tensor([1]))
    assert float(fifo[0]) == pytest.approx(float(2 * p[0] + p[1]), abs=1e-12)


def test_policy_objects_give_the_searched_tables(de_moor):
    inst = de_moor["lifo"]
    space = inst.trans.space
    table = dp.policy_choice(space, BspLowEw(inst.problem, 5, 6, 7), inst.product)
    assert torch.equal(table, bsp_low_ew_order(inst.position, inst.waste, 5, 6, 7, 10).long())
    table = dp.policy_choice(space, PerishableBaseStock(inst.problem, 5), inst.product)
    assert torch.equal(table, base_stock_order(inst.position, 5, 10).long())


def test_searches_find_the_best_point_of_a_full_box_and_stay_above_the_optimum(de_moor):
    inst = de_moor["fifo"]
    optimum = suite.optimum(inst).average_cost
    level, base_cost = best_base_stock(inst)
    assert (level, base_cost) == grid_search(
        lambda p: inst.average_cost(base_stock_order(inst.position, p[0], 10)), [range(21)])
    params, waste_cost = best_bsp_low_ew(inst)
    box = grid_search(lambda p: inst.average_cost(bsp_low_ew_order(inst.position, inst.waste, *p, 10)),
                      [range(3, 8), range(6, 11), range(5, 10)])
    assert (params, waste_cost) == box
    assert params == (5, 8, 7) and waste_cost == pytest.approx(14.955469, abs=1e-5)
    assert optimum < waste_cost < base_cost
    assert base_cost == pytest.approx(15.131612, abs=1e-5)


def test_heuristic_costs_are_above_the_optimum_on_the_suite_instances():
    for issuing, m, L in [("lifo", 2, 1), ("fifo", 3, 1)]:
        costs = suite.evaluate({"m": m, "L": L, "w": 10, "issuing": issuing})
        assert costs["dp"] <= costs["waste_aware_base_stock"] + 1e-9 <= costs["base_stock"] + 2e-9


def test_bsp_low_ew_simulated_costs_what_the_exact_evaluation_says(de_moor):
    inst = de_moor["lifo"]
    exact = inst.average_cost(bsp_low_ew_order(inst.position, inst.waste, 5, 6, 7, 10))
    paths = make_batch(sample_demand(np.random.default_rng(3), np.array(["gamma"] * 200), np.full(200, 4.0),
                                     np.full(200, 0.5), 600), lead_time=1, h=1.0, p=5.0, c=3.0,
                       mean=4.0, dist="gamma")
    paths.true_shape[:] = 0.5
    traj = rollout(inst.problem, BspLowEw(inst.problem, 5, 6, 7), paths, 0, 600, 2)
    assert float(traj.cost[:, 50:].mean()) == pytest.approx(exact, rel=0.01)
