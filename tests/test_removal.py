"""Joint procurement and removal (docs/problems/removal.md): the simulator by hand, the exact DP against the
interval-stock structure (Maggiar and Sadighian 2017), the claimed properties, the heuristics'
searches and the benchmark's discounted criterion."""
import functools
import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import make_batch
from pipeline.core import dp
from pipeline.core.demand import true_pmf
from pipeline.studies.suites import instance_key
from pipeline.studies.suites import removal_suite as bench
from pipeline.config import CONF_DIR
from pipeline.core.heuristics.removal_heuristics import IntervalStockPolicy, best_interval_stock
from pipeline.core.heuristics.search import grid_search
from pipeline.core.problems.removal import Removal, order_and_removal_together
from pipeline.core.rollout import rollout
from pipeline.core.properties import check_table


class FixedActions:
    """Plays given [order, removal] actions [B, T, 2]."""

    def __init__(self, actions):
        self.actions = torch.as_tensor(actions, dtype=torch.float32)
        if self.actions.ndim == 2:
            self.actions = self.actions[None]

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return self.actions[:, t]


def run(demand, actions, lead_time, width, on_hand, s=1.0, **econ):
    batch = make_batch(demand, lead_time=lead_time, **econ)
    start = torch.zeros(batch.size, width)
    start[:, 0] = torch.as_tensor(on_hand, dtype=torch.float32)
    return rollout(Removal(removal_value=s), FixedActions(actions), batch, 0, batch.periods, width,
                   initial_state=start, record_states=True)


# ---------------------------------------------------------------- simulator

def test_zero_lead_time_trajectory_by_hand():
    # t0: on hand 10, remove 3 (+3 x s), order 0, demand 5 -> hold 2
    # t1: on hand 2, remove 4 -> only 2 removed, order 1 arrives at once, demand 3 -> lose 2
    # t2: on hand 0, order 6, remove 0, demand 4 -> hold 2
    traj = run([5, 3, 4], [[0, 3], [1, 4], [6, 0]], lead_time=0, width=1, on_hand=10,
               s=0.5, h=1.0, p=4.0, c=2.0)
    assert traj.states[0, :, 0].tolist() == [10, 2, 0]
    assert traj.waste[0].tolist() == [3, 2, 0]
    assert traj.sales[0].tolist() == [5, 1, 4]
    assert traj.lost[0].tolist() == [0, 2, 0]
    assert traj.held[0].tolist() == [2, 0, 2]
    assert traj.cost[0].tolist() == [-0.5 * 3 + 2, 2 * 1 - 0.5 * 2 + 4 * 2, 2 * 6 + 2]


def test_lead_time_one_trajectory_by_hand():
    # the removal acts on this period's on hand; an order arrives next period and can be removed then
    # t0: 6 on hand, order 4, remove 2 -> 4 available, demand 3 -> hold 1; next 1 + 4 = 5
    # t1: 5, remove 5 -> 0 available, demand 2 -> lose 2; next 0
    # t2: 0, demand 1 -> lose 1
    traj = run([3, 2, 1], [[4, 2], [0, 5], [0, 0]], lead_time=1, width=1, on_hand=6,
               s=-0.5, h=1.0, p=9.0, c=2.0)  # negative s: a disposal cost
    assert traj.states[0, :, 0].tolist() == [6, 5, 0]
    assert traj.waste[0].tolist() == [2, 5, 0]
    assert traj.cost[0].tolist() == [2 * 4 + 0.5 * 2 + 1, 0.5 * 5 + 9 * 2, 9]


@pytest.mark.parametrize("lead_time, width", [(0, 1), (2, 2)])
def test_gradient_of_the_cost_matches_finite_differences_for_both_actions(lead_time, width):
    problem = Removal(removal_value=0.7)
    batch = make_batch([[4, 9, 2, 6]], lead_time=lead_time, h=1.3, p=6.0, c=2.0).to("cpu", torch.float64)
    setup = problem.setup(batch, width)
    # non-integer actions away from the kinks: some periods hold stock, some lose sales
    actions = torch.tensor([[1.3, 2.6], [3.7, 0.4], [0.2, 1.1], [5.4, 0.3]], dtype=torch.float64)

    def total_cost(a):
        state = torch.zeros(1, width, dtype=torch.float64)
        state[0, 0] = 7.5
        total = 0.0
        for t in range(4):
            step = problem.step(state, a[t][None], batch.demand[:, t], batch, setup)
            total = total + step.cost.sum()
            state = step.next_state
        return total

    a = actions.clone().requires_grad_(True)
    grad, = torch.autograd.grad(total_cost(a), a)
    eps = 1e-5
    numeric = torch.zeros_like(actions)
    for t in range(4):
        for k in range(2):
            up, down = actions.clone(), actions.clone()
            up[t, k] += eps
            down[t, k] -= eps
            numeric[t, k] = (total_cost(up) - total_cost(down)) / (2 * eps)
    assert torch.allclose(grad, numeric, atol=1e-6)
    assert bool((grad[:, 1] != 0).any())  # the removal does move the cost


def test_initial_state_spreads_overstock_and_parameters_are_checked():
    batch = make_batch(torch.full((64, 20), 5.0))
    state = Removal(initial_stock_periods=6.0).initial_state(batch, 2)
    assert torch.equal(state, state.round()) and bool((state[:, 1] == 0).all())
    assert 0 <= float(state[:, 0].min()) <= 2 and 28 <= float(state[:, 0].max()) <= 30
    assert float(Removal(initial_stock_periods=0.0).initial_state(batch, 1).abs().max()) == 0
    with pytest.raises(ValueError, match="removal_value 2.0 must be below every product's unit cost"):
        Removal(removal_value=2.0).setup(make_batch([[1, 2]], c=2.0), 1)
    with pytest.raises(ValueError, match="initial_stock_periods"):
        Removal(initial_stock_periods=-1.0)


# ---------------------------------------------------------------- exact DP

@functools.cache
def solved(p, s, L, gamma=0.95):
    """(problem, product, transitions, discounted optimum, initial law) of one instance."""
    problem, one = Removal(removal_value=float(s)), bench.product(p, L)
    space = problem.dp_space(one, bench.MEAN, math.sqrt(bench.MEAN))
    trans = dp.transitions(problem, one, space, dp.trimmed_pmf(true_pmf(one)[0]))
    initial = bench.initial_law(space, 30)
    return problem, one, trans, dp.solve(trans, gamma), initial


@pytest.mark.parametrize("p, s", [(4, 0), (4, 1), (19, 1)])
def test_lead_time_zero_optimum_is_exactly_interval_stock(p, s):
    *_, sol, initial = solved(p, s, 0)
    table = sol.table.long()
    y = torch.arange(table.shape[0])
    a = int(table[0, 0])
    b = int((table[:, 1] == 0).nonzero().max())
    assert 0 < a < b < table.shape[0] - 1
    assert torch.equal(table[:, 0], torch.clamp(a - y, min=0))  # order up to a below a
    assert torch.equal(table[:, 1], torch.clamp(y - b, min=0))  # remove down to b above b
    # and the best interval-stock policy costs exactly the optimum
    costs = bench.evaluate({"p": p, "s": s, "L": 0, "gamma": 0.95})
    assert costs["interval_stock"] == pytest.approx(costs["dp"], abs=1e-9)
    assert costs["dp"] == pytest.approx(bench.criterion(sol, initial), abs=1e-6)
    assert costs["base_stock"] > costs["dp"] + 0.1  # removing overstock is worth something here


def test_interval_levels_move_with_the_removal_value():
    # a higher removal value removes sooner: b(s = 1) < b(s = 0); the order-up-to level is the same
    tables = {s: solved(4, s, 0)[3].table.long() for s in (0, 1)}
    uppers = {s: int((t[:, 1] == 0).nonzero().max()) for s, t in tables.items()}
    assert (int(tables[0][0, 0]), int(tables[1][0, 0])) == (6, 6)
    assert (uppers[0], uppers[1]) == (14, 9)


@pytest.mark.parametrize("p, s, L", [(4, 0, 0), (4, 1, 0), (19, 1, 0), (4, 1, 1), (19, 0, 1)])
def test_dp_policies_never_order_and_remove_together_and_keep_the_claimed_properties(p, s, L):
    problem, _, _, sol, _ = solved(p, s, L)
    assert order_and_removal_together(sol.table) == 0.0
    width = problem.state_width(L)
    results = check_table(sol.table, problem.state_names(width), list(problem.actions),
                          problem.claimed_properties(width))
    assert [(r.states, r.holds) for r in results] == [(30, 1.0), (30, 1.0)]


def test_discounted_values_match_a_linear_solve_and_a_simulation():
    problem, _, trans, sol, initial = solved(19, 1, 1)
    S, P = trans.next.shape[0], dp.policy_matrix(trans, sol.choice)
    exact = torch.linalg.solve(torch.eye(S, dtype=torch.float64) - 0.95 * P, trans.cost[torch.arange(S), sol.choice])
    assert torch.allclose(sol.values, exact, atol=1e-6)
    # the DP table played in the simulator from the same starts, 250 discounted periods
    g = torch.Generator().manual_seed(0)
    n, T = 3100, 250
    demand = torch.poisson(torch.full((n, T), 5.0), generator=g)
    batch = make_batch(demand.numpy(), lead_time=1, h=1.0, p=19.0, c=2.0)
    start = torch.arange(n, dtype=torch.float32)[:, None] % 31  # on hand 0..30, 100 paths each
    traj = rollout(problem, dp.TablePolicy.of(sol), batch, 0, T, 1, initial_state=start)
    weights = 0.95 ** torch.arange(T, dtype=torch.float64)
    simulated = 0.05 * float((traj.cost.double() * weights).sum(dim=1).mean())
    assert simulated == pytest.approx(bench.criterion(sol, initial), rel=0.01)


def test_the_grid_does_not_bind_the_criterion():
    """The same instance on a grid 15 units taller, with removals up to its top."""
    problem, one, trans, sol, initial = solved(4, 1, 1)
    big = dp.StateSpace((0,), (45,), torch.cartesian_prod(torch.arange(20.0, dtype=torch.float64),
                                                          torch.arange(46.0, dtype=torch.float64)))
    big_trans = dp.transitions(problem, one, big, trans.pmf)
    big_sol = dp.solve(big_trans, 0.95)
    assert bench.criterion(big_sol, bench.initial_law(big, 30)) == pytest.approx(
        bench.criterion(sol, initial), abs=1e-6)
    assert not bench.grid_binds(trans, sol, initial)


# ---------------------------------------------------------------- heuristics and suite

def test_interval_stock_search_finds_the_grid_optimum():
    problem, one, trans, sol, initial = solved(4, 1, 1)

    def cost(a, b):
        policy = IntervalStockPolicy(problem, torch.tensor([float(a)]), torch.tensor([float(b)]), one.product_id)
        return bench.criterion(dp.evaluate_policy(trans, policy, one, 0.95), initial)

    full, full_cost = grid_search(lambda ab: cost(*ab) if ab[1] >= ab[0] else math.inf,
                                  [range(3, 11), range(6, 16)])
    found, found_cost = best_interval_stock(cost, (8, 13), 30)
    assert found == full and found_cost == pytest.approx(full_cost, abs=1e-12)
    assert found_cost > bench.criterion(sol, initial)  # with L = 1 interval-stock is not optimal


def test_interval_stock_policy_acts_on_the_inventory_position():
    policy = IntervalStockPolicy(Removal(), torch.tensor([6.0, 6.0]), torch.tensor([10.0, 10.0]))
    state = torch.tensor([[2.0, 1.0], [12.0, 3.0]])
    act = policy.act(policy.prepare(make_batch([[0], [0]]), 0, 1), 0, state)
    assert act.tolist() == [[3.0, 0.0], [0.0, 5.0]]
    capped = policy.act(policy.prepare(make_batch([[0], [0]]), 0, 1), 0, torch.tensor([[1.0, 14.0], [0.0, 0.0]]))
    assert capped.tolist() == [[0.0, 1.0], [6.0, 0.0]]  # cannot remove what is still in the pipeline
    with pytest.raises(ValueError, match="upper level"):
        IntervalStockPolicy(Removal(), torch.tensor([6.0]), torch.tensor([5.0]))


def test_suite_instances_and_heuristic_costs_are_at_least_the_optimum():
    assert [instance_key(i) for i in bench.GRID[:2]] == ["p=4;s=0;L=0;gamma=0.95", "p=4;s=1;L=0;gamma=0.95"]
    assert len(bench.GRID) == 8 and bench.POLICIES[0] == "dp"
    costs = bench.evaluate({"p": 19, "s": 0, "L": 1, "gamma": 0.95})
    assert list(costs) == list(bench.POLICIES)
    assert costs["dp"] < costs["interval_stock"] < costs["base_stock"]


def test_problem_yaml_builds_the_problem_and_keeps_unit_costs_above_the_removal_value():
    conf = OmegaConf.load(CONF_DIR / "problem" / "removal.yaml")
    problem = Removal(**conf.problem.params)
    assert conf.problem.name == problem.name == "removal"
    assert min(conf.data.unit_cost_range) > problem.removal_value
    assert OmegaConf.load(CONF_DIR / "suite" / "removal.yaml").benchmark.suite == "removal"
