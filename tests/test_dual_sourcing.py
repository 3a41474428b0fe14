"""Dual sourcing with backlog (docs/problems/dual_sourcing.md): the simulator against hand-computed trajectories,
the exact DP against the published optimum, the heuristics and their searches, and the
structural properties of the optimal policy."""
import math

import numpy as np
import pytest
import torch

from conftest import make_batch
from pipeline.core import dp
from pipeline.core.demand import true_pmf
from pipeline.studies.suites import dual_sourcing_suite as suite
from pipeline.studies.suites import instance_key
from pipeline.core.demand import sample_demand
from pipeline.core.evaluation import policy_metrics
from pipeline.core.heuristics import dual_sourcing_heuristics as heuristics
from pipeline.core.heuristics.search import grid_search
from pipeline.core.problems.dual_sourcing import DualSourcing
from pipeline.core.rollout import rollout
from pipeline.core.properties import Property, check_table


class FixedOrders:
    """A policy that places given orders [B, T, 2] (regular, expedited)."""

    def __init__(self, orders):
        self.orders = torch.as_tensor(orders)
        if self.orders.ndim == 2:
            self.orders = self.orders[None]

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return self.orders[:, t].to(state.dtype)


def run(problem, demand, orders, lead_time, width, dtype=torch.float32, **econ):
    batch = make_batch(demand, lead_time=lead_time, **econ).to("cpu", dtype)
    return rollout(problem, FixedOrders(orders), batch, 0, batch.periods, width, record_states=True)


# ---------------------------------------------------------------- the simulator


def test_regular_order_arrives_after_its_lead_time_and_backlog_is_charged():
    """l_r = 2, l_e = 0; h = 1, b = 10, c_r = 2, c_e = 5, worked by hand:
    t0: net 0, expedite 1 (arrives at once), demand 2 -> net -1: cost 10 + 2*3 + 5*1 = 21;
        the regular 3 is due at t2.
    t1: net -1, demand 1 -> -2: cost 10*2 + 2*2 = 24; the 3 arrives: next net 1.
    t2: net 1, demand 4 -> -3: cost 30; the 2 ordered at t1 arrive: next net -1.
    t3: net -1, expedite 2, demand 0 -> 1: cost 1 + 5*2 = 11."""
    problem = DualSourcing(expedited_lead_time=0, expedited_cost=5.0)
    traj = run(problem, [2, 1, 4, 0], [[3, 1], [2, 0], [0, 0], [0, 2]], lead_time=2, width=2,
               h=1.0, p=10.0, c=2.0)
    assert traj.states[0].tolist() == [[0, 0], [-1, 3], [1, 2], [-1, 0]]
    assert traj.cost[0].tolist() == [21, 24, 30, 11]
    assert traj.lost[0].tolist() == [1, 2, 3, 0]   # backlog at the end of each period
    assert traj.held[0].tolist() == [0, 0, 0, 1]
    assert torch.equal(traj.sales, traj.demand)  # backlogged units are sold too, when they ship


def test_expedited_order_with_lead_time_one_serves_the_next_period():
    """l_e = 1, l_r = 3 (state [net, regular_1, regular_2]): the expedited 2 placed at t0
    does not serve t0's demand of 1, and arrives at t1; the regular 1 placed at t0 at t3."""
    problem = DualSourcing(expedited_lead_time=1, expedited_cost=7.0)
    traj = run(problem, [1, 0, 0, 0], [[1, 2], [0, 3], [0, 0], [0, 0]], lead_time=3, width=3,
               h=1.0, p=10.0, c=2.0)
    assert traj.states[0].tolist() == [[0, 0, 0], [1, 0, 1], [4, 1, 0], [5, 0, 0]]
    assert traj.cost[0].tolist() == [10 + 2 + 14, 1 + 21, 4, 5]


def test_expedited_pipeline_for_lead_time_two():
    """l_e = 2, l_r = 3: state [net, regular_1, regular_2, expedited_1]."""
    problem = DualSourcing(expedited_lead_time=2)
    assert problem.state_width(3) == 4
    assert problem.state_names(4) == ["net_inventory", "regular_1", "regular_2", "expedited_1"]
    traj = run(problem, [0] * 5, [[1, 4], [2, 5], [0, 0], [0, 0], [0, 0]], lead_time=3, width=4)
    assert traj.states[0].tolist() == [[0, 0, 0, 0], [0, 0, 1, 4], [4, 1, 2, 5], [10, 2, 0, 0], [12, 0, 0, 0]]
    state = traj.states[0, 2][None]
    assert float(problem.inventory_position(state)) == 12
    assert float(problem.expedited_position(state)) == 4 + 1 + 2 + 5  # all arrive within 2 periods


def test_cost_gradient_matches_finite_differences():
    problem = DualSourcing(expedited_lead_time=0, expedited_cost=20.0)
    gen = torch.Generator().manual_seed(3)
    demand = torch.randint(0, 5, (3, 12), generator=gen).double()
    orders = (torch.rand(3, 12, 2, generator=gen, dtype=torch.float64) * 4 + 0.37).requires_grad_()

    def total(o):
        return run(problem, demand, o, [2, 3, 2], 3, dtype=torch.float64, h=5.0, p=495.0, c=1.0).cost.sum()

    (grad,) = torch.autograd.grad(total(orders), orders)
    eps = 1e-5
    for idx in [(0, 0, 0), (0, 3, 1), (1, 5, 0), (2, 7, 1), (1, 10, 0), (2, 1, 0)]:
        bump = torch.zeros_like(orders)
        bump[idx] = eps
        with torch.no_grad():
            fd = (total(orders + bump) - total(orders - bump)) / (2 * eps)
        assert float(grad[idx]) == pytest.approx(float(fd), abs=1e-6)
    assert float(grad.abs().sum()) > 0


def test_parameters_are_validated_and_lead_times_checked():
    with pytest.raises(ValueError, match="expedited_lead_time"):
        DualSourcing(expedited_lead_time=-1)
    with pytest.raises(ValueError, match="expedited_cost"):
        DualSourcing(expedited_cost=-3.0)
    problem = DualSourcing(expedited_lead_time=1)
    assert problem.min_lead_time == 2
    with pytest.raises(ValueError, match="lead_time >= 2"):
        problem.setup(make_batch([[0, 0]], lead_time=1), 2)


# ---------------------------------------------------------------- the exact DP and the heuristics


@pytest.fixture(scope="module")
def reference():
    """l_r = 2, c_e = 20 (docs/problems/dual_sourcing.md): problem, product, transitions, optimal solution."""
    with dp.one_thread():
        problem, one, trans = suite.instance_transitions({"l_r": 2, "c_e": 20})
        return problem, one, trans, dp.solve(trans)


def test_dp_reproduces_the_published_optimum(reference):
    *_, solution = reference
    assert solution.average_cost == pytest.approx(23.07, abs=0.01)
    assert solution.average_cost == pytest.approx(23.0714, abs=1e-4)
    assert solution.truncation < 1e-12 and solution.at_action_cap < 1e-12


def test_a_wider_grid_gives_the_same_optimum(reference):
    """The grid does not bind: twice the net-inventory range and two more units of each
    order change nothing."""
    problem, one, trans, solution = reference
    space = trans.space
    lows, highs = (2 * space.lows[0], 0), (2 * space.highs[0], space.highs[1] + 2)
    q_r, q_e = torch.meshgrid(torch.arange(highs[1] + 1.0, dtype=torch.float64),
                              torch.arange(space.actions[:, 1].max() + 3, dtype=torch.float64), indexing="ij")
    wide = dp.StateSpace(lows, highs, torch.stack([q_r.reshape(-1), q_e.reshape(-1)], dim=1))
    again = dp.solve(dp.transitions(problem, one, wide, trans.pmf))
    assert wide.size > 2.5 * space.size
    assert again.average_cost == pytest.approx(solution.average_cost, abs=1e-9)


@pytest.mark.parametrize("l_e, l_r", [(0, 1), (1, 2)])
def test_dual_index_is_optimal_for_consecutive_lead_times(l_e, l_r):
    """Fukuda (1964): with l_r - l_e = 1 a dual base-stock policy is optimal."""
    problem, one = DualSourcing(expedited_lead_time=l_e, expedited_cost=20.0), suite.product(l_r)
    space = problem.dp_space(one, 2.0, math.sqrt(2.0))
    trans = dp.transitions(problem, one, space, dp.trimmed_pmf(true_pmf(one)[0]))
    optimum = dp.solve(trans)
    _, cost = heuristics.search_dual_index(problem, heuristics.exact_cost(trans, one), space, 2.0, one)
    assert cost == pytest.approx(optimum.average_cost, abs=1e-6)
    assert optimum.average_cost == pytest.approx({1: 20.0, 2: 29.0}[l_r], abs=1e-6)


def test_heuristics_cost_at_least_the_optimum(reference):
    problem, one, trans, solution = reference
    cost = heuristics.exact_cost(trans, one)
    found = {name: search(problem, cost, trans.space, 2.0, one)[1] for name, search in suite.SEARCHES.items()}
    assert all(value >= solution.average_cost - 1e-9 for value in found.values())
    assert found == pytest.approx({"single_index": 26.0, "dual_index": 23.3377, "capped_dual_index": 23.1209,
                                   "tailored_base_surge": 31.9030}, abs=1e-4)
    assert found["capped_dual_index"] <= found["dual_index"] <= found["single_index"]


def test_parameter_searches_agree_with_a_full_grid(reference):
    problem, one, trans, _ = reference
    cost = heuristics.exact_cost(trans, one)
    levels, spreads, caps = range(11), range(9), range(6)  # caps: every regular order of the grid
    grids = {
        "single_index": grid_search(lambda p: cost(heuristics.SingleIndexPolicy(problem, p[0], p[0] + p[1])),
                                    [levels, spreads]),
        "dual_index": grid_search(lambda p: cost(heuristics.DualIndexPolicy(problem, p[0], p[0] + p[1])),
                                  [levels, spreads]),
        "capped_dual_index": grid_search(
            lambda p: cost(heuristics.DualIndexPolicy(problem, p[0], p[0] + p[1], p[2])), [levels, spreads, caps]),
        "tailored_base_surge": grid_search(
            lambda p: cost(heuristics.TailoredBaseSurgePolicy(problem, p[0], p[1])), [caps, levels]),
    }
    for name, search in suite.SEARCHES.items():
        assert search(problem, cost, trans.space, 2.0, one)[1] == pytest.approx(grids[name][1], abs=1e-9), name
    assert grids["capped_dual_index"][0] == (4, 5, 3)  # z_e = 4, z_r = 9, cap 3


def test_unstable_base_surge_is_rejected(reference):
    """A constant regular order equal to the mean demand makes the inventory a driftless
    random walk above the surge level: its cost is unbounded, and the grid says so."""
    problem, one, trans, _ = reference
    cost = heuristics.exact_cost(trans, one)
    assert cost(heuristics.TailoredBaseSurgePolicy(problem, 2, 4)) == math.inf
    assert cost(heuristics.TailoredBaseSurgePolicy(problem, 1, 4)) < math.inf


def test_heuristic_and_dp_policies_in_the_simulator_cost_what_the_dp_says(reference):
    problem, one, trans, solution = reference
    rng = np.random.default_rng(5)
    n, periods = 300, 700
    demand = sample_demand(rng, np.array(["uniform"] * n), np.full(n, 2.0), np.zeros(n), periods)
    paths = make_batch(demand, lead_time=2, h=5.0, p=495.0, c=0.0, mean=2.0, dist="uniform")
    dual_index = heuristics.DualIndexPolicy(problem, 4, 9)
    exact = dp.evaluate_policy(trans, dual_index, one).average_cost
    for policy, value in ((dual_index, exact), (dp.TablePolicy.of(solution), solution.average_cost)):
        m = policy_metrics(problem, policy, paths, 0, periods, 50, 2, round_actions=True)
        assert m["avg_cost"] == pytest.approx(value, rel=0.02)


def test_heuristics_act_per_product_on_a_batch():
    problem = DualSourcing(expedited_lead_time=0)
    state = torch.tensor([[-1.0, 3.0], [5.0, 2.0]])
    assert problem.expedited_position(state).tolist() == [-1, 5]
    si = heuristics.SingleIndexPolicy(problem, 4.0, 7.0)  # row 0: position 2, expedite 2, regular 3
    assert si.act(si.prepare(make_batch([[0], [0]]), 0, 1), 0, state).tolist() == [[3, 2], [0, 0]]
    cdi = heuristics.DualIndexPolicy(problem, torch.tensor([4.0, 6.0]), torch.tensor([9.0, 9.0]), 3.0)
    # row 0: expedite 4 - (-1) = 5, regular min(9 - 2 - 5, 3) = 2; row 1: expedite 1, regular min(1, 3)
    assert cdi.act(cdi.prepare(make_batch([[0], [0]]), 0, 1), 0, state).tolist() == [[2, 5], [1, 1]]
    tbs = heuristics.TailoredBaseSurgePolicy(problem, 1.0, 4.0)
    assert tbs.act(tbs.prepare(make_batch([[0], [0]]), 0, 1), 0, state).tolist() == [[1, 5], [1, 0]]


# ---------------------------------------------------------------- structural properties


@pytest.mark.parametrize("l_r, c_e", [(2, 5), (2, 20), (3, 10)])
def test_claimed_properties_hold_on_dp_policies(l_r, c_e):
    problem, _, trans = suite.instance_transitions({"l_r": l_r, "c_e": c_e})
    solution = dp.solve(trans)
    names = problem.state_names(len(trans.space.lows))
    visited = (dp.stationary(trans, solution.choice) > 1e-6).reshape(trans.space.shape)
    claimed = problem.claimed_properties(len(names))
    assert len(claimed) == 2 * len(names) + 2 * (len(names) - 1)
    for mask in (visited, None):  # the states the optimal policy visits; every grid state
        results = check_table(solution.table, names, list(problem.actions), claimed, mask=mask)
        assert all(r.holds == 1.0 and r.states > 0 for r in results), [str(r.prop) for r in results if r.holds < 1]
    # the opposite orderings fail in some visited states (the check can tell them apart)
    reverse = [Property("regular_order", "net_inventory", other="regular_1"),
               Property("expedited_order", "regular_1", other="net_inventory")]
    shares = [r.holds for r in check_table(solution.table, names, list(problem.actions), reverse, mask=visited)]
    assert max(shares) < 1.0
    if (l_r, c_e) == (2, 20):
        assert shares == pytest.approx([20 / 21, 18 / 21])


# ---------------------------------------------------------------- the benchmark suite


def test_suite_grid_and_one_instance():
    assert [instance_key(i) for i in suite.GRID][:3] == ["l_r=2;c_e=5", "l_r=2;c_e=10", "l_r=2;c_e=20"]
    assert len(suite.GRID) == 9 and suite.POLICIES[0] == "dp" and "23.07" in suite.NOTES
    costs = suite.evaluate({"l_r": 2, "c_e": 5})
    assert list(costs) == list(suite.POLICIES)
    assert costs["dp"] == pytest.approx(16.7698, abs=1e-4)
    assert min(costs.values()) == costs["dp"]


def test_config_files_load():
    """conf/problem/dual_sourcing.yaml and conf/suite/dual_sourcing.yaml."""
    from pipeline.config import ConfigError, load_config

    c = load_config(["problem=dual_sourcing", "suite=dual_sourcing"])
    assert c.problem.params == {"expedited_lead_time": 0, "expedited_cost": 20.0}
    assert (c.data.distributions, c.data.mean_range, c.data.lead_time_range) == (["uniform"], [2.0, 2.0], [2, 2])
    assert (c.data.holding_cost_range, c.data.shortage_cost_range, c.data.unit_cost_range) == (
        [5.0, 5.0], [495.0, 495.0], [0.0, 0.0])
    assert c.benchmark.suite == "dual_sourcing"
    with pytest.raises(ConfigError, match="lead_time_range must start at >= 1"):
        load_config(["problem=dual_sourcing", "data.lead_time_range=[0,2]"])


def test_the_network_trains_through_the_simulator():
    """Two outputs (regular, expedited) and a gradient through both."""
    from pipeline.core.policy import OrderPolicy
    from pipeline.core.rollout import directbackprop_loss, period_loss

    problem = DualSourcing()
    rng = np.random.default_rng(0)
    batch = make_batch(sample_demand(rng, np.array(["uniform"] * 4), np.full(4, 2.0), np.zeros(4), 30),
                       lead_time=[2, 3, 2, 3], h=5.0, p=495.0, mean=2.0, dist="uniform")
    net = OrderPolicy(problem.state_width(3), kind="mlp", n_actions=len(problem.actions))
    traj = rollout(problem, net, batch, 5, 20, problem.state_width(3))
    loss = directbackprop_loss(period_loss(traj, batch, "cost"), 2, 1.0)
    loss.backward()
    assert traj.actions.shape == (4, 20, 2) and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert float(net.head[-1].weight.grad.abs().sum(dim=1).min()) > 0  # both outputs get a gradient


def test_the_expedited_position_reads_each_product_s_expedited_lead_time():
    """Under the constant l_e = 2, products with l_e = 0, 1, 2 count the regular orders that
    arrive within their own expedited lead time (and their expedited pipeline)."""
    state = torch.tensor([[4.0, 1.0, 2.0, 3.0, 0.0], [4.0, 1.0, 2.0, 3.0, 0.0], [4.0, 1.0, 2.0, 3.0, 5.0]])
    got = DualSourcing(expedited_lead_time=2).expedited_position(state, torch.tensor([0, 1, 2]))
    alone = [DualSourcing(expedited_lead_time=l_e).expedited_position(s[None, : 4 + (l_e == 2)])
             for l_e, s in enumerate(state)]
    assert got.tolist() == [4.0, 5.0, 12.0] == [float(a) for a in alone]
