"""Lost-sales heuristics (docs/problems/lost_sales.md): orders in hand-computable states, exact costs against
the DP and the simulator, and Zipkin's (2008) published costs."""
import math

import numpy as np
import pytest
import torch
from test_baselines import poisson_population

from pipeline.core import dp
from pipeline.studies.suites.lost_sales_suite import product
from pipeline.core.evaluation import policy_metrics
from pipeline.core.heuristics import lost_sales_heuristics as H
from pipeline.core.problems.lost_sales import LostSales

TOP = 60  # demand support of the brute-force computations: P(D > 60) is negligible for Poisson(5)
PMF = np.array([math.exp(-5) * 5 ** d / math.factorial(d) for d in range(TOP + 1)])
CDF = np.cumsum(PMF)


def g(y: int, p: float, h: float = 1.0) -> float:
    """Expected cost of a period that starts with y units on hand."""
    d = np.arange(TOP + 1)
    return float(PMF @ (h * np.maximum(y - d, 0) + p * np.maximum(d - y, 0)))


@pytest.fixture(scope="module")
def p9l1():
    return H.Instance.of(product(9, 1))


@pytest.fixture(scope="module")
def p9l2():
    return H.Instance.of(product(9, 2))


def test_standard_vector_levels_are_quantiles_of_multi_period_demand(p9l2):
    """Morton's s_l: the p/(p+h) quantile of Poisson(5 (L - l + 1)); s_L is the newsvendor
    level of docs/problems/lost_sales.md (8 for p = 9)."""
    def quantile(lam):
        cdf, k = 0.0, 0
        while True:
            cdf += math.exp(-lam) * lam ** k / math.factorial(k)
            if cdf >= 0.9:
                return k
            k += 1
    assert H.standard_vector_levels(p9l2) == (quantile(15), quantile(10), quantile(5))
    assert H.standard_vector_levels(p9l2)[-1] == 8


def test_myopic_1_with_lead_time_1_is_the_newsvendor_of_what_is_left(p9l1):
    """L = 1: the order z arrives next period on top of J = (x0 - D)^+; myopic-1 orders the
    smallest z with P(D' <= J + z) >= p / (p + h)."""
    table = H.myopic_table(p9l1, 1)
    for x0 in range(16):
        left = np.array([PMF[x0 - j] if j > 0 else 1 - CDF[x0 - 1] if x0 > 0 else 1.0
                         for j in range(x0 + 1)])  # P(J = j)
        z = next(z for z in range(30) if left @ CDF[np.arange(x0 + 1) + z] >= 0.9 - 1e-12)
        assert int(table[x0]) == z, x0
    assert int(table[0]) == 8  # nothing on hand: the newsvendor level


def test_myopic_1_with_lead_time_2_by_enumerating_two_demands(p9l2):
    table = H.myopic_table(p9l2, 1)
    d = np.arange(TOP + 1)
    cost = np.array([g(y, 9) for y in range(80)])
    for x0, x1 in [(0, 0), (3, 2), (9, 0), (12, 7), (20, 5)]:
        left = np.maximum(np.maximum(x0 - d[:, None], 0) + x1 - d[None, :], 0)  # J for (D1, D2)
        weight = PMF[:, None] * PMF[None, :]
        expected = [float((weight * cost[left + z]).sum()) for z in range(20)]
        assert int(table[x0, x1]) == int(np.argmin(expected)), (x0, x1)


def test_myopic_2_with_lead_time_1_by_enumeration(p9l1):
    """z minimises E g((x0 - D)^+ + z) + E min_z' E g(((x0 - D)^+ + z - D')^+ + z')."""
    table = H.myopic_table(p9l1, 2)
    d = np.arange(TOP + 1)
    cost = np.array([g(y, 9) for y in range(80)])
    C = lambda y, z: PMF @ cost[np.maximum(y - d, 0) + z]
    best_next = np.array([min(C(y, z) for z in range(20)) for y in range(40)])
    for x0 in (0, 2, 5, 9, 14):
        values = [C(x0, z) + PMF @ best_next[np.maximum(x0 - d, 0) + z] for z in range(20)]
        assert int(table[x0]) == int(np.argmin(values)), x0


def test_capped_and_vector_base_stock_orders_by_hand():
    state = torch.tensor([[5.0, 7.0, 0.0], [30.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # width 3, lead time 2
    batch = poisson_population(3, 2, 9, 2)
    vector = H.VectorBaseStockPolicy((20, 14, 8))
    # v = (12, 7, 0): min(20 - 12, 14 - 7, 8 - 0) = 7; v_0 = 30: nothing; empty: min(20, 14, 8)
    assert vector.act(vector.prepare(batch, 0, 1), 0, state)[:, 0].tolist() == [7, 0, 8]
    capped = H.CappedBaseStockPolicy(20, 6)
    assert capped.act(None, 0, state)[:, 0].tolist() == [6, 0, 6]
    assert H.CappedBaseStockPolicy(20).act(None, 0, state)[:, 0].tolist() == [8, 0, 20]
    with pytest.raises(ValueError, match="lead time 2"):
        vector.prepare(poisson_population(3, 2, 9, 3), 0, 1)


@pytest.mark.parametrize("L", [1, 2, 3])
def test_fast_evaluation_equals_the_dp_solver_with_a_fixed_table(L):
    inst = H.Instance.of(product(9, L))
    N, Q = inst.max_on_hand, inst.max_order
    levels = H.standard_vector_levels(inst)
    tables = [H.myopic_table(inst, 1), H.myopic_table(inst, 2), dp.base_stock_table(levels[0] - 2, N, Q, L)]
    policies = [H.CappedBaseStockPolicy(levels[0], 6), H.VectorBaseStockPolicy(levels)]
    for table in tables + [H.order_table(inst, policy) for policy in policies]:
        reference = dp.lost_sales_rvi(inst.pmf, 1.0, 9.0, L, N, Q, fixed=table, tol=1e-9).average_cost
        assert H.policy_average_cost(inst, table) == pytest.approx(reference, abs=1e-6)
    for policy in policies:  # evaluated only on the states its chain can reach
        reference = dp.lost_sales_rvi(inst.pmf, 1.0, 9.0, L, N, Q, fixed=H.order_table(inst, policy),
                                      tol=1e-9).average_cost
        assert H.policy_cost(inst, policy) == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("p", [4, 9])
def test_every_heuristic_costs_at_least_the_optimum(p):
    inst = H.Instance.of(product(p, 2))
    optimum = dp.lost_sales_optimum(inst.pmf, 1.0, p, 2, 5.0, 5 ** 0.5).average_cost
    base, base_cost = H.best_base_stock(inst)
    capped_cost = H.best_capped_base_stock(inst)[1]
    vector_cost = H.best_vector_base_stock(inst)[1]
    standard = H.policy_cost(inst, H.VectorBaseStockPolicy(H.standard_vector_levels(inst)))
    myopic = [H.policy_average_cost(inst, H.myopic_table(inst, k)) for k in (1, 2)]
    for cost in [base_cost, capped_cost, vector_cost, standard, *myopic]:
        assert cost > optimum - 1e-9
    assert capped_cost <= base_cost and vector_cost <= standard
    assert capped_cost <= H.policy_cost(inst, H.CappedBaseStockPolicy(base[0], inst.max_order))  # contains base-stock
    if p == 4:  # Zipkin (2008): optimum 4.40
        assert optimum == pytest.approx(4.40, abs=0.005)


def test_optimal_orders_respect_mortons_bound(p9l2):
    """Morton (1971): the optimal order never exceeds the standard vector base-stock order."""
    sol = dp.lost_sales_rvi(p9l2.pmf, 1.0, 9.0, 2, p9l2.max_on_hand, p9l2.max_order)
    bound = H.order_table(p9l2, H.VectorBaseStockPolicy(H.standard_vector_levels(p9l2)))
    assert bool((sol.policy <= bound).all())
    assert bool((sol.policy < bound).any())  # a bound, not the optimal policy


@pytest.mark.parametrize("name", ["myopic_2", "capped", "vector"])
def test_exact_cost_agrees_with_simulation(p9l2, name):
    """400 paths x 800 periods of the policy object in the simulator: standard error ~0.2%."""
    policy = {"myopic_2": H.myopic_policy(p9l2, 2), "capped": H.CappedBaseStockPolicy(19, 6),
              "vector": H.VectorBaseStockPolicy((19, 14, 6))}[name]
    exact = H.policy_cost(p9l2, policy)
    paths = poisson_population(400, 800, 9, 2, seed=5)
    simulated = policy_metrics(LostSales(), policy, paths, 0, 800, 50, 2, round_actions=True)["avg_cost"]
    assert simulated == pytest.approx(exact, rel=0.015)


def test_zipkin_published_heuristic_costs_p4_l4():
    """Zipkin (2008) Table 3(a), p = 4, L = 4: myopic 5.06, myopic-2 4.82, standard vector
    base-stock 5.83 (two decimals)."""
    inst = H.Instance.of(product(4, 4))
    costs = H.arrival_costs(inst)
    assert H.policy_average_cost(inst, H.myopic_table(inst, 1, costs)) == pytest.approx(5.06, abs=0.005)
    assert H.policy_average_cost(inst, H.myopic_table(inst, 2, costs)) == pytest.approx(4.82, abs=0.005)
    standard = H.VectorBaseStockPolicy(H.standard_vector_levels(inst))
    assert H.policy_cost(inst, standard) == pytest.approx(5.83, abs=0.005)


def test_stationary_distribution_matches_the_generic_dp(p9l2):
    """The policy chain's long-run law against dp.stationary on the transition table built
    from LostSales.step, for the optimal policy."""
    sol = dp.lost_sales_rvi(p9l2.pmf, 1.0, 9.0, 2, p9l2.max_on_hand, p9l2.max_order)
    ours = H.stationary_distribution(p9l2, sol.policy)
    space = LostSales().dp_space(p9l2.product, 5.0, 5 ** 0.5)
    trans = dp.transitions(LostSales(), p9l2.product, space, dp.trimmed_pmf(p9l2.pmf))
    generic = dp.stationary(trans, sol.policy.reshape(-1))
    assert torch.allclose(ours.reshape(-1), generic, atol=1e-9)
    assert float(ours.sum()) == pytest.approx(1.0)
