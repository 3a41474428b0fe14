"""Baselines against closed forms (docs/problems/lost_sales.md) and the searches that set their levels."""
import numpy as np
import pytest
import torch

from conftest import make_batch
from pipeline.core.baselines import (
    BaseStockPolicy,
    best_constant_level,
    empirical_levels,
    newsvendor_cost,
    newsvendor_levels,
    omniscient_levels,
    search_levels,
    simulated_level_costs,
)
from pipeline.core.demand import demand_pmf, sample_demand
from pipeline.core.evaluation import policy_metrics
from pipeline.core.problems import get_problem

PROBLEM = get_problem("lost_sales")
NEWSVENDOR_L0 = {4: (7, 3.2774), 9: (8, 4.2211), 19: (9, 5.0803), 39: (10, 5.8875)}


def poisson_population(n, periods, p, lead_time, mean=5.0, seed=0):
    rng = np.random.default_rng(seed)
    demand = sample_demand(rng, np.array(["poisson"] * n), np.full(n, mean), np.zeros(n), periods)
    return make_batch(demand, lead_time=lead_time, p=float(p), mean=mean)


@pytest.mark.parametrize("p", sorted(NEWSVENDOR_L0))
def test_omniscient_zero_lead_time_matches_closed_form(p):
    batch = poisson_population(2, 40, p, 0)
    level = newsvendor_levels(batch, "cost")
    assert level.tolist() == [NEWSVENDOR_L0[p][0]] * 2
    assert newsvendor_cost(batch, level)[0].item() == pytest.approx(NEWSVENDOR_L0[p][1], abs=1e-4)
    # the newsvendor level is the minimiser of the exact cost over neighbouring levels
    for delta in (-1, 1):
        assert newsvendor_cost(batch, level + delta)[0] > newsvendor_cost(batch, level)[0]


def test_simulated_cost_of_omniscient_policy_agrees_with_closed_form():
    batch = poisson_population(400, 1000, 9, 0, seed=3)
    policy = BaseStockPolicy(PROBLEM, newsvendor_levels(batch, "cost"))
    m = policy_metrics(PROBLEM, policy, batch, 0, 1000, 1, 1, round_actions=True)
    assert m["avg_cost"] == pytest.approx(4.2211, rel=0.01)  # 400k periods: s.e. ~0.1%


def test_pmfs_sum_to_one_and_have_their_means():
    dist = np.array(["poisson", "negbin", "zip"])
    mean, shape = torch.tensor([4.0, 6.0, 3.0]), torch.tensor([0.0, 2.5, 0.3])
    pmf = demand_pmf(dist, mean, shape, 200)
    d = torch.arange(201, dtype=torch.float64)
    assert torch.allclose(pmf.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose((pmf * d).sum(1), mean.double(), atol=1e-6)
    assert pmf[2, 0].item() == pytest.approx(0.3 + 0.7 * np.exp(-3 / 0.7))


def test_level_search_finds_minimum_of_convex_function():
    target = torch.tensor([3.0, 17.0, 140.0])
    best = search_levels(lambda cand: (cand - target[:, None]).abs() + 0.01 * cand,
                         center=torch.tensor([10.0, 10.0, 100.0]), spread=torch.tensor([4.0, 40.0, 60.0]))
    assert best.tolist() == target.tolist()


def test_best_base_stock_with_lead_time_is_the_simulated_optimum():
    batch = poisson_population(3, 10, 9, 1)
    levels = omniscient_levels(PROBLEM, batch, 1, "cost", seed=0, sim_periods=3000)
    # brute-force scan of levels on 400 independent paths of 500 periods each
    paths = poisson_population(400, 500, 9, 1, seed=11)
    costs = simulated_level_costs(PROBLEM, paths, torch.arange(9.0, 18.0).repeat(400, 1), 1,
                                  0, 500, 20, "cost").mean(0)
    best = 9 + int(costs.argmin())
    assert 9 < best < 17  # an interior minimum
    for level in levels.tolist():  # each product searched on its own simulated path
        assert abs(level - best) <= 1
        assert costs[int(level) - 9] <= costs[best - 9] * 1.005


def test_empirical_level_is_history_quantile():
    demand = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 2])
    batch = make_batch(demand, p=4.0, h=1.0)  # fractile 0.8
    assert empirical_levels(batch, 10, "cost").tolist() == [8.0]
    batch = make_batch(demand, p=4.0, h=1.0, lead_time=1)  # sums of 2 consecutive periods
    assert empirical_levels(batch, 10, "cost").tolist() == [17.0]


def test_best_constant_level_on_identical_products_is_newsvendor():
    batch = poisson_population(200, 300, 4, 0, seed=5)
    assert best_constant_level(PROBLEM, batch, 1, 32, 268, 2, "cost") == 7.0


def test_base_stock_levels_follow_their_products_into_any_batch():
    batch = poisson_population(4, 40, 9, 0)
    policy = BaseStockPolicy(PROBLEM, torch.tensor([5.0, 6.0, 7.0, 8.0]), batch.product_id)
    assert policy.prepare(batch.select([3, 3, 1]), 32, 1).tolist() == [8.0, 8.0, 6.0]
    with pytest.raises(ValueError, match="4 base-stock levels for a batch of 2"):
        BaseStockPolicy(PROBLEM, torch.ones(4)).prepare(batch.select([0, 1]), 32, 1)
