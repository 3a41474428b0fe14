"""Exact DP for lost sales against Zipkin (2008), and its policy played in the simulator."""
import numpy as np
import pytest
import torch

from pipeline.core.baselines import dp_policy, simulated_level_costs
from pipeline.core.demand import demand_pmf
from pipeline.core import dp
from pipeline.studies.suites.lost_sales_suite import product
from pipeline.core.dp import TablePolicy, base_stock_table, lost_sales_rvi
from pipeline.core.evaluation import policy_metrics
from pipeline.core.problems import get_problem
from test_baselines import poisson_population

PMF = demand_pmf(np.array(["poisson"]), torch.tensor([5.0]), torch.tensor([0.0]), 60)[0]


@pytest.mark.parametrize("p, L, optimum", [(4, 2, 4.40), (19, 4, 8.89)])
def test_rvi_reproduces_zipkin_optimal_costs(p, L, optimum):
    sol = lost_sales_rvi(PMF, 1.0, float(p), L, max_on_hand=35, max_order=20)
    assert sol.average_cost == pytest.approx(optimum, abs=0.01)
    assert sol.span < 1e-5
    assert int(sol.policy.max()) < 20  # the order truncation does not bind


def test_truncation_is_loose_enough():
    small = lost_sales_rvi(PMF, 1.0, 9.0, 2, max_on_hand=30, max_order=16)
    large = lost_sales_rvi(PMF, 1.0, 9.0, 2, max_on_hand=45, max_order=25)
    assert small.average_cost == pytest.approx(large.average_cost, abs=1e-4)


def test_dp_policy_in_the_simulator_costs_what_the_dp_says():
    problem = get_problem("lost_sales")
    paths = poisson_population(400, 600, 9, 2, seed=4)
    policy = dp_policy(problem, paths, "cost")
    m = policy_metrics(problem, policy, paths, 0, 600, 50, 2, round_actions=True)
    exact = lost_sales_rvi(PMF, 1.0, 9.0, 2, max_on_hand=35, max_order=20).average_cost
    assert m["avg_cost"] == pytest.approx(exact, rel=0.01)


def test_dp_baseline_refuses_mixed_populations():
    mixed = poisson_population(4, 50, 9, 2)
    mixed.shortage_cost[0] = 4.0
    with pytest.raises(ValueError, match="identical products"):
        dp_policy(get_problem("lost_sales"), mixed, "cost")
    assert isinstance(dp_policy(get_problem("lost_sales"), poisson_population(4, 50, 9, 2), "cost"), TablePolicy)


@pytest.mark.parametrize("p, L, optimum", [(4, 0, 3.2774), (4, 1, 4.0407), (4, 2, 4.3953)])
def test_generic_solver_through_the_simulator_matches_the_specialised_one(p, L, optimum):
    """The transition table built from LostSales.step, solved by the generic RVI."""
    problem, one = get_problem("lost_sales"), product(p, L)
    space = problem.dp_space(one, 5.0, 5.0 ** 0.5)
    sol = dp.solve(dp.transitions(problem, one, space, dp.trimmed_pmf(PMF)))
    assert sol.average_cost == pytest.approx(optimum, abs=1e-4)
    assert sol.truncation < 1e-6 and sol.at_action_cap < 1e-6
    if L >= 1:  # the same optimal order in every state the optimal policy visits
        special = lost_sales_rvi(PMF, 1.0, float(p), L, *space.highs[:1], int(space.actions.max()))
        visited = dp.stationary(dp.transitions(problem, one, space, dp.trimmed_pmf(PMF)), sol.choice) > 1e-9
        assert torch.equal(sol.table[..., 0].reshape(-1)[visited].long(), special.policy.reshape(-1)[visited])


def test_discounted_value_iteration_matches_a_linear_solve():
    """Discounted VI on a small instance against V = (I - gamma P_pi)^-1 c_pi for its policy."""
    problem, one = get_problem("lost_sales"), product(9, 1)
    space = dp.StateSpace((0,), (25,), torch.arange(14, dtype=torch.float64)[:, None])
    trans = dp.transitions(problem, one, space, dp.trimmed_pmf(PMF))
    sol = dp.solve(trans, discount=0.9, tol=1e-10)
    S, P = trans.next.shape[0], dp.policy_matrix(trans, sol.choice)
    exact = torch.linalg.solve(torch.eye(S, dtype=torch.float64) - 0.9 * P, trans.cost[torch.arange(S), sol.choice])
    assert torch.allclose(sol.values, exact, atol=1e-7)
    # and no single-state deviation improves on it (Bellman optimality)
    Q = trans.cost + 0.9 * (exact[trans.next] @ trans.pmf)
    assert bool((Q.min(dim=1).values >= exact - 1e-7).all())


def test_policy_evaluation_of_the_optimal_table_gives_the_optimum():
    sol = lost_sales_rvi(PMF, 1.0, 9.0, 3, max_on_hand=30, max_order=16)
    again = lost_sales_rvi(PMF, 1.0, 9.0, 3, max_on_hand=30, max_order=16, fixed=sol.policy)
    assert again.average_cost == pytest.approx(sol.average_cost, abs=1e-5)


def test_exact_base_stock_cost_matches_simulation_and_is_above_the_optimum():
    N, Q, L = 35, 20, 2
    opt = lost_sales_rvi(PMF, 1.0, 9.0, L, N, Q).average_cost
    costs = {S: lost_sales_rvi(PMF, 1.0, 9.0, L, N, Q, fixed=base_stock_table(S, N, Q, L)).average_cost
             for S in range(14, 22)}
    best = min(costs, key=costs.get)
    assert 14 < best < 21 and costs[best] > opt
    # the same base-stock level simulated on 400 paths x 1000 periods
    paths = poisson_population(400, 1000, 9, L, seed=8)
    simulated = simulated_level_costs(get_problem("lost_sales"), paths, torch.full((400, 1), float(best)),
                                      L, 0, 1000, 50, "cost").mean()
    assert float(simulated) == pytest.approx(costs[best], rel=0.01)


def test_capped_base_stock_never_orders_more_than_the_cap():
    table = base_stock_table(30, 35, 20, 3, cap=6)
    assert int(table.max()) == 6 and int(table[0, 0, 0]) == 6
    assert int(base_stock_table(30, 35, 20, 3)[0, 0, 0]) == 20  # uncapped: 30, truncated to Q
