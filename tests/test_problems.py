"""The contract every registered problem meets, through the same code the trainer uses:
its YAML loads, the network learns on it, both objectives are defined, and its exact DP
policy played in the simulator costs what the DP says."""
import numpy as np
import pytest
import torch

from pipeline.core import dp
from pipeline.config import load_config
from pipeline.core.batch import batch_from_columns
from pipeline.data.synthetic import synthetic_population
from pipeline.core.training import TrainSpec, train_step
from pipeline.core.evaluation import policy_metrics
from pipeline.core.policy import build_policy
from pipeline.core.problems import PROBLEMS, get_problem
from pipeline.core.rollout import period_loss, rollout


def population(name: str, n: int, periods: int, identical: bool = False, seed: int = 0):
    """Products as ``conf/problem/<name>.yaml`` describes them (each range at its low end
    when ``identical``)."""
    cfg = load_config([f"problem={name}", "experiment=smoke"])
    if identical:
        for key in ("mean_range", "negbin_shape_range", "zero_prob_range", "gamma_cv_range",
                    "holding_cost_range", "shortage_cost_range", "unit_cost_range", "price_range",
                    "lead_time_range"):
            lo = getattr(cfg.data, key)[0]
            setattr(cfg.data, key, [lo, lo])
        cfg.data.distributions = cfg.data.distributions[:1]
    cfg.data.num_products, cfg.data.periods = n, periods
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    return cfg, problem, batch_from_columns(synthetic_population(cfg.data, seed))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_the_network_learns_on_every_problem(name):
    """25 DirectBackprop steps close at least half of the gap between the untrained
    network's cost and the exact optimum (identical products, so the DP gives it)."""
    cfg, problem, batch = population(name, 64, 120, identical=True)
    cfg.train.horizon, cfg.train.warmup, cfg.train.lr = 30, 5, 2e-2
    cfg.policy.kind = "mlp"  # the same head without the demand encoder: fast enough for a unit test
    width = problem.state_width(int(batch.lead_time.max()))
    torch.manual_seed(0)
    policy = build_policy(cfg.policy, width, len(problem.actions))

    def cost():
        with torch.no_grad():
            return policy_metrics(problem, policy, batch, 60, 60, 10, width, round_actions=False)["avg_cost"]

    optimum = policy_metrics(problem, dp.optimal_policy(problem, batch.select([0])), batch, 60, 60, 10,
                             width, round_actions=True)["avg_cost"]
    before = cost()
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    for i in range(25):
        train_step(policy, optimizer, problem, batch, 32 + i % 20, TrainSpec.from_config(cfg, problem, width))
    assert cost() - optimum < 0.5 * (before - optimum)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_reward_is_revenue_minus_cost(name):
    cfg, problem, batch = population(name, 8, 60)
    batch.price[:] = 7.0
    width = problem.state_width(int(batch.lead_time.max()))
    policy = build_policy(cfg.policy, width, len(problem.actions))
    traj = rollout(problem, policy, batch, 40, 20, width)
    assert traj.actions.shape == (8, 20, len(problem.actions))
    assert torch.allclose(period_loss(traj, batch, "reward"), traj.cost - 7.0 * traj.sales)
    assert bool((traj.sales <= traj.demand + 1e-6).all()) and bool((traj.cost >= 0).all())


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_dp_policy_simulated_costs_what_the_dp_says(name):
    cfg, problem, batch = population(name, 300, 700, identical=True, seed=3)
    width = problem.state_width(int(batch.lead_time.max()))
    first = batch.select([0])
    policy = dp.optimal_policy(problem, first)
    exact = dp.evaluate_policy(dp.transitions(problem, first, policy.space, dp.trimmed_pmf(_pmf(first))),
                               policy, first).average_cost
    simulated = policy_metrics(problem, policy, batch, 0, 700, 100, width, round_actions=True)["avg_cost"]
    assert simulated == pytest.approx(exact, rel=0.02)


def _pmf(product):
    from pipeline.core.demand import true_pmf
    return true_pmf(product)[0]


def test_unknown_problem_parameter_is_refused():
    with pytest.raises(ValueError, match="no parameter 'colour'"):
        get_problem("lost_sales", {"colour": "red"})
    assert np.all([isinstance(get_problem(n).actions, tuple) for n in PROBLEMS])
