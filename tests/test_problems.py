"""The contract every registered problem meets, through the same code the trainer uses:
its YAML loads, the network learns on it, both objectives are defined, and its exact DP
policy played in the simulator costs what the DP says."""
import numpy as np
import pytest
import torch

from pipeline.core import dp
from pipeline.config import load_config
from pipeline.core.batch import batch_from_columns, make_batch
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
    policy = build_policy(cfg.policy, width, problem)

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
    batch.unit_cost[:] = batch.unit_cost + 1.0
    width = problem.state_width(int(batch.lead_time.max()))
    policy = build_policy(cfg.policy, width, problem)
    traj = rollout(problem, policy, batch, 40, 20, width)
    assert traj.actions.shape == (8, 20, len(problem.actions))
    # summed over the window: revenue minus cost, with the stock it opened and closed with at unit cost
    stock = batch.unit_cost * (traj.position[:, -1] - traj.opening)
    assert bool((traj.position[:, -1] > 0).any())
    assert torch.allclose(period_loss(traj, batch, "reward").sum(1), (traj.cost - 7.0 * traj.sales).sum(1) - stock,
                          rtol=1e-4, atol=1e-3)
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


class FixedActions:
    """Plays given actions [B, T, A]."""

    def __init__(self, actions):
        self.actions = actions

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return self.actions[:, t]


MIXED = [(name, pair) for name in sorted(PROBLEMS) for pair in PROBLEMS[name].mixed_instances()]


def widest(name, params_a, params_b):
    """The problem whose constants are ``params_a``'s, the structural ones the pair's larger."""
    return get_problem(name, {k: max(v, params_b[k]) if k in PROBLEMS[name].structural else v
                              for k, v in params_a.items()})


@pytest.mark.parametrize("name, pair", MIXED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MIXED)])
def test_a_batch_mixing_two_instances_rolls_out_as_each_alone(name, pair):
    """Products of two instances (other lead times, other parameters, the structural ones
    included) in one batch, their parameters given per product under the pair's larger
    structural constants, roll out exactly as each instance's products alone with its
    parameters as population constants; the state entries that only the longer lead times,
    shelf lives or expedited lead times use stay empty."""
    cls, (params_a, params_b) = PROBLEMS[name], pair
    lo, lo_b = (get_problem(name, params).min_lead_time for params in pair)
    leads = ([lo, lo + 2], [max(lo + 1, lo_b)])
    gen = torch.Generator().manual_seed(len(MIXED))
    demand = torch.randint(0, 8, (3, 14), generator=gen).float()
    actions = torch.randint(0, 6, (3, 14, len(cls.actions)), generator=gen).float()
    rows = ([0, 1], [2])
    alone, starts = [], []
    for params, lead, row in zip((params_a, params_b), leads, rows):
        problem = get_problem(name, params)
        batch = make_batch(demand[row], lead_time=lead, h=2.0, p=9.0, c=3.0, mean=3.0)
        width = problem.state_width(max(lead))
        starts.append((problem.initial_state(batch, width), problem.state_names(width)))
        alone.append((rollout(problem, FixedActions(actions[row]), batch, 0, 14, width,
                              initial_state=starts[-1][0], record_states=True), starts[-1][1]))
    per_product = {k: [params_a[k]] * 2 + [params_b[k]] for k in params_a}
    mixed = widest(name, params_a, params_b)
    batch = make_batch(demand, lead_time=leads[0] + leads[1], h=2.0, p=9.0, c=3.0, mean=3.0, **per_product)
    width = mixed.state_width(max(lo + 2, lo_b))
    names = mixed.state_names(width)
    start = torch.zeros(3, width)
    for (state, own), row in zip(starts, rows):
        start[row[0]:row[-1] + 1, [names.index(n) for n in own]] = state
    assert torch.equal(mixed.initial_state(batch, width)[:2], start[:2])  # rows of the first instance
    together = rollout(mixed, FixedActions(actions), batch, 0, 14, width, initial_state=start, record_states=True)
    for (traj, own), row in zip(alone, rows):
        for field in ("cost", "sales", "held", "lost", "waste"):
            assert torch.equal(getattr(together, field)[row], getattr(traj, field)), field
        cols = [names.index(n) for n in own]
        assert torch.equal(together.states[row][:, :, cols], traj.states)
        rest = [j for j in range(width) if j not in cols]
        assert not together.states[row][:, :, rest].any()


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_the_dp_reads_a_parameter_column_as_the_constant(name):
    """The exact DP of a product whose parameters come as columns (under the pair's larger
    structural constants) is that of the problem with them as population constants: the
    same grid but for always-empty entries last (the same flat indices), the same
    transitions (the column wins over the constant)."""
    params_a, params_b = PROBLEMS[name].mixed_instances()[0]
    mixed = widest(name, params_a, params_b)
    L = mixed.min_lead_time
    plain = make_batch([[0.0]], L, h=2.0, p=9.0, c=3.0, mean=1.5)
    pmf = _pmf(plain)
    for params in (params_a, params_b):
        alone = get_problem(name, params)
        given = make_batch([[0.0]], L, h=2.0, p=9.0, c=3.0, mean=1.5, **params)
        space, own = alone.dp_space(plain, 1.5, 1.5 ** 0.5), mixed.dp_space(given, 1.5, 1.5 ** 0.5)
        empty = (0,) * (len(own.highs) - len(space.highs))
        assert (own.lows, own.highs) == (space.lows + empty, space.highs + empty)
        assert torch.equal(own.actions, space.actions)
        want, got = dp.transitions(alone, plain, space, pmf), dp.transitions(mixed, given, own, pmf)
        assert torch.equal(got.cost, want.cost) and torch.equal(got.next, want.next)


def test_a_heuristic_reads_a_parameter_column_as_the_constant():
    """BSP-low-EW's expected waste under a per-product issuing rule is that of the problem
    with the rule as a constant, product by product."""
    from pipeline.core.heuristics.perishable_heuristics import BspLowEw
    from pipeline.core.problems import Perishable
    batch = make_batch(torch.zeros(2, 40), [2, 2], mean=3.0, issuing=["fifo", "lifo"])
    state = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    policy = BspLowEw(Perishable(3, "fifo"), 4.0, 9.0, 5.0)
    mixed = policy.act(policy.prepare(batch, 32, 1), 0, state)
    assert not torch.equal(mixed[0], mixed[1])  # the rules differ here
    for i, rule in enumerate(("fifo", "lifo")):
        own = BspLowEw(Perishable(3, rule), 4.0, 9.0, 5.0)
        one = batch.select([i])
        one.params = {}
        assert torch.equal(mixed[i], own.act(own.prepare(one, 32, 1), 0, state[i:i + 1])[0])


@pytest.mark.parametrize("name, column", [("perishable", {"shelf_life": [2, 3]}), ("perishable", {"max_order": [4, 11]}),
                                          ("dual_sourcing", {"expedited_lead_time": [0, 1]})])
def test_a_structural_column_above_the_constant_is_refused(name, column):
    """The population constant of a structural parameter is its largest value: a column may
    give a product any value up to it."""
    (key, values), problem = next(iter(column.items())), get_problem(name)
    batch = make_batch(torch.zeros(2, 4), problem.min_lead_time + 1, **column)
    with pytest.raises(ValueError, match=f"{name}: {key} {max(values)} in a column exceeds "
                                         f"problem.params.{key} = {getattr(problem, key)}, the largest value"):
        problem.setup(batch, problem.state_width(problem.min_lead_time + 1))
    wider = get_problem(name, {key: max(values)})
    wider.setup(batch, wider.state_width(problem.min_lead_time + 1))


def test_the_regular_lead_time_must_exceed_each_product_s_expedited_one():
    problem = get_problem("dual_sourcing", {"expedited_lead_time": 2})
    problem.setup(make_batch(torch.zeros(3, 4), [1, 2, 3], expedited_lead_time=[0, 1, 2]), 4)
    with pytest.raises(ValueError, match="lead times 1..3 need lead_time >= the product's own minimum"):
        problem.setup(make_batch(torch.zeros(3, 4), [1, 2, 3], expedited_lead_time=[0, 2, 2]), 4)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_the_network_sees_parameter_features_as_column_or_constant(name):
    """With the problem, the network's static inputs end with the problem's parameter
    features, the same whether a parameter is a column or the population constant (a
    structural one as a column up to the population's largest value); lost sales adds none."""
    from pipeline.core.policy import N_STATIC, OrderPolicy, static_features
    params_a, params_b = PROBLEMS[name].mixed_instances()[0]
    columns = {k: [params_a[k], params_b[k]] for k in params_a}
    largest = get_problem(name, {k: max(params_a[k], params_b[k]) for k in PROBLEMS[name].structural if k in params_a})
    mixed = make_batch(torch.ones(2, 40), 1, **columns)
    scale = torch.ones(2)
    feats = static_features(mixed, scale, largest)
    n = PROBLEMS[name].n_param_features
    assert feats.shape == (2, N_STATIC + n) and (n > 0) == bool(columns)
    assert torch.equal(feats[:, :N_STATIC], static_features(mixed, scale))
    assert n == 0 or not torch.equal(feats[0, N_STATIC:], feats[1, N_STATIC:])
    for i, params in enumerate((params_a, params_b)):
        alone = static_features(make_batch(torch.ones(1, 40), 1), scale[:1], get_problem(name, params))
        assert torch.equal(feats[i], alone[0])
    policy = OrderPolicy(4, kind="mlp", n_actions=len(PROBLEMS[name].actions), problem=largest)
    assert policy.first_exo.in_features == N_STATIC + n + 3
    policy.prepare(mixed, 32, 4)
