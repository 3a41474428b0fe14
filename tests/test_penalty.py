"""The structure penalty: zero for a policy that meets the spec, positive for one that
breaks it (both built by hand), and the network's Jacobian against finite differences."""
import torch

from conftest import make_batch
from pipeline.core.penalty import (
    DIRECTION_EPS,
    jacobian,
    penalty,
    probe_states,
    violation_metrics,
    violations,
)
from pipeline.core.policy import OrderPolicy
from pipeline.core.problems import get_problem

PROBLEM = get_problem("lost_sales")
NAMES = PROBLEM.state_names(3)
PROPS = PROBLEM.claimed_properties(3)  # -1 <= dq/dy_2 <= dq/dy_1 <= dq/dy_0 <= 0


class Linear:
    """q = relu(S - w . y): slopes -w where it orders."""

    def __init__(self, weights):
        self.w = torch.tensor(weights, dtype=torch.float64)

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return torch.relu(30.0 - state @ self.w)


STATES = torch.tensor([[2.0, 3.0, 1.0], [5.0, 0.0, 4.0], [0.0, 1.0, 1.0]], dtype=torch.float64)


def test_penalty_is_zero_for_a_policy_that_meets_the_spec():
    # Morton-like: more sensitive to later-arriving stock, all slopes in [-1, 0]
    _, J = jacobian(Linear([0.5, 0.75, 1.0]), None, 0, STATES)
    assert torch.allclose(J[:, 0], torch.tensor([-0.5, -0.75, -1.0], dtype=torch.float64).expand(3, 3))
    size = violations(J, PROPS, NAMES, ["order"])
    assert float(penalty(size, torch.ones(len(PROPS), dtype=torch.float64)).detach()) == 0.0
    assert all(v == 0.0 for k, v in violation_metrics(size, PROPS).items())


def test_penalty_is_positive_for_one_that_breaks_it():
    # slope -2 in on-hand (below -1), and on-hand more sensitive than the pipeline (wrong order)
    _, J = jacobian(Linear([2.0, 0.5, 0.5]), None, 0, STATES)
    size = violations(J, PROPS, NAMES, ["order"])
    metrics = violation_metrics(size, PROPS)
    assert metrics["order.on_hand.bound/violation_rate"] == 1.0
    assert metrics["order.on_hand.bound/violation_size"] == 1.0          # -2 is 1 below -1
    assert metrics["order.pipeline_1.le.on_hand/violation_size"] == 1.5  # -0.5 vs -2
    assert metrics["order.pipeline_2.le.pipeline_1/violation_rate"] == 0.0
    weights = torch.zeros(len(PROPS), dtype=torch.float64)
    weights[0] = 3.0
    assert float(penalty(size, weights).detach()) == 3.0


def test_network_jacobian_matches_finite_differences_and_the_penalty_has_gradients():
    torch.manual_seed(0)
    demand = torch.poisson(torch.full((4, 60), 5.0)).double()
    batch = make_batch(demand, lead_time=3, p=9.0).to("cpu", torch.float64)
    policy = OrderPolicy(3).double()
    ctx = policy.prepare(batch, 40, 10)
    state = torch.rand(4, 3, dtype=torch.float64) * 10
    _, J = jacobian(policy, ctx, 2, state)
    eps = 1e-6
    for i in range(3):
        up, down = state.clone(), state.clone()
        up[:, i] += eps
        down[:, i] -= eps
        with torch.no_grad():
            numeric = (policy.act(ctx, 2, up) - policy.act(ctx, 2, down))[:, 0] / (2 * eps)
        assert torch.allclose(J[:, 0, i], numeric, atol=1e-6)
    loss = penalty(violations(J, PROPS, NAMES, ["order"]) + 0.1, torch.ones(len(PROPS), dtype=torch.float64))
    grads = torch.autograd.grad(loss, [p for p in policy.parameters()], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_probes_cover_a_wider_box_than_the_visited_states():
    g = torch.Generator().manual_seed(0)
    probes = probe_states(STATES.expand(1000, -1, -1).reshape(-1, 3), 4.0, g)
    top = STATES.amax(dim=0).clamp_min(1.0) * 4
    assert bool((probes >= 0).all()) and bool((probes <= top).all())
    assert bool((probes.amax(dim=0) > 0.9 * top).all())  # reaches far outside the visited box
    backlog = STATES - torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)  # first coordinate down to -3
    probes = probe_states(backlog.expand(1000, -1, -1).reshape(-1, 3), 4.0, g)
    assert float(probes[:, 0].min()) < -0.9 * 12 and bool((probes[:, 0] >= -12).all())
    assert bool((probes[:, 1:] >= 0).all())  # coordinates never negative are probed from 0


def test_training_with_the_penalty_lowers_out_of_distribution_violations():
    """Same data, same initial weights, 30 steps each: with the lost-sales spec weighted,
    the share of probe states that violate it ends lower than without; weight 0 computes
    no penalty at all."""
    from pipeline.config import load_config
    from pipeline.core.training import TrainSpec, train_step
    from pipeline.core.penalty import structure_penalty
    from pipeline.core.policy import build_policy
    from pipeline.core.rollout import rollout

    demand = torch.poisson(torch.full((64, 120), 5.0), generator=torch.Generator().manual_seed(0))
    batch = make_batch(demand.numpy(), lead_time=3, p=9.0)
    rates = {}
    for weight in (0.0, 10.0):
        cfg = load_config(["experiment=smoke", "data.lead_time_range=[3,3]", "policy.kind=mlp",
                           f"penalty.weights=[{weight}]", "train.horizon=30", "train.lr=0.01"])
        torch.manual_seed(0)
        policy = build_policy(cfg.policy, 3, PROBLEM)
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
        for i in range(30):
            out = train_step(policy, optimizer, PROBLEM, batch, 40 + i % 40, TrainSpec.from_config(cfg, PROBLEM, 3))
            assert ("penalty" in out) == (weight > 0)
        traj = rollout(PROBLEM, policy, batch, 60, 30, 3, record_states=True)
        _, m = structure_penalty(policy, traj, PROPS, torch.ones(len(PROPS)), NAMES, ["order"], 1.0, 3.0,
                                 torch.Generator().manual_seed(1))
        rates[weight] = m["violation_rate_out"]
    assert rates[10.0] < rates[0.0], rates


def test_a_shocked_context_changes_the_policy_inputs_from_the_shock_on_only():
    from pipeline.core.penalty import ShockProbes, shocked_context

    torch.manual_seed(0)
    batch = make_batch(torch.poisson(torch.full((8, 90), 5.0)).numpy(), lead_time=3)
    policy = OrderPolicy(3)
    nominal = policy.prepare(batch, 40, 11)
    shocked = shocked_context(policy, batch, 40, 10, ShockProbes(1.0, (2.0, 2.0), 1), discrete=True)
    # the shock starts one period before decision 10: decision 10 sees it, decision 9 does not
    assert len(shocked.exogenous) == 11
    assert torch.equal(shocked.exogenous[9], nominal.exogenous[9])
    assert not torch.equal(shocked.exogenous[10], nominal.exogenous[10])


def test_shock_probes_lower_the_violations_after_a_demand_shift():
    """Same data, same initial weights, 40 penalised steps each: with half the penalty on
    probes in the context after a demand shift, the policy breaks the properties less often
    after a shift to 0.3 x demand than when it is penalised in the nominal context only."""
    from pipeline.config import load_config
    from pipeline.core.penalty import ShockProbes, structure_penalty
    from pipeline.core.policy import build_policy
    from pipeline.core.rollout import rollout
    from pipeline.core.training import TrainSpec, train_step

    demand = torch.poisson(torch.full((64, 120), 5.0), generator=torch.Generator().manual_seed(0))
    batch = make_batch(demand.numpy(), lead_time=3, p=9.0)
    rates = {}
    for share in (0.0, 0.5):
        cfg = load_config(["experiment=smoke", "data.lead_time_range=[3,3]", "policy.kind=cnn", "penalty.weights=[10.0]",
                           f"penalty.shock_share={share}", "train.horizon=30", "train.lr=0.01"])
        torch.manual_seed(0)
        policy = build_policy(cfg.policy, 3, PROBLEM)
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
        spec = TrainSpec.from_config(cfg, PROBLEM, 3)
        for i in range(40):
            out = train_step(policy, optimizer, PROBLEM, batch, 40 + i % 40, spec)
            assert ("violation_rate_shock" in out) == (share > 0)
        traj = rollout(PROBLEM, policy, batch, 60, 30, 3, record_states=True)
        torch.manual_seed(2)
        down = ShockProbes(1.0, (0.3, 0.3), 12)
        measured = [structure_penalty(policy, traj, PROPS, torch.ones(len(PROPS)), NAMES, ["order"], 1.0, 3.0,
                                      shocks=down, batch=batch, start=60, discrete=True)[1]["violation_rate_shock"]
                    for _ in range(10)]
        rates[share] = sum(measured) / len(measured)
    assert rates[0.5] < rates[0.0], rates


def test_properties_read_back_from_their_text_and_defaults_follow_the_dp():
    from pipeline.core.properties import parse_property

    for prop in PROPS:
        assert parse_property(str(prop)) == prop
    lifo3 = get_problem("perishable", {"shelf_life": 3, "issuing": "lifo"})
    defaults = lifo3.default_properties(3)  # only slope <= 0: the DP breaks the rest (docs/structure.md)
    assert all(p.other is None and p.hi == 0 and p.lo == -float("inf") for p in defaults) and len(defaults) == 3
    fifo3 = get_problem("perishable", {"shelf_life": 3, "issuing": "fifo"})
    assert fifo3.default_properties(3) == fifo3.claimed_properties(3)


def test_structure_metrics_in_and_out_of_distribution():
    from pipeline.core.penalty import structure_metrics

    demand = torch.poisson(torch.full((8, 40), 5.0), generator=torch.Generator().manual_seed(0))
    batch = make_batch(demand.numpy(), lead_time=3).to("cpu", torch.float64)
    good = structure_metrics(Linear([0.5, 0.75, 1.0]), PROBLEM, batch, 20, 5, 3, PROPS, 3.0)
    bad = structure_metrics(Linear([2.0, 0.5, 0.5]), PROBLEM, batch, 20, 5, 3, PROPS, 3.0)
    assert good["in/violation_rate"] == 0.0 and good["out/violation_rate"] == 0.0
    # q = relu(30 - w.y) violates the spec exactly where it orders (slope -2 in on-hand),
    # and holds where it does not (slope 0): the in-distribution rate is that share
    from pipeline.core.rollout import rollout
    states = rollout(PROBLEM, Linear([2.0, 0.5, 0.5]), batch, 20, 5, 3, record_states=True).states
    ordering = float((30.0 - states @ torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64) > 0).double().mean())
    assert 0.0 < ordering < 1.0 and bad["in/violation_rate"] == ordering
    # the probes: the same draws structure_metrics makes (seed 0, one per visited state)
    g, w = torch.Generator().manual_seed(0), torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64)
    probes = probe_states(states.reshape(-1, 3), 3.0, g)
    assert bad["out/violation_rate"] == float((30.0 - probes @ w > 0).double().mean())
    assert bad["in/order.on_hand.bound/violation_size"] == ordering  # 1 unit below -1 where it orders


def _ddp_setup():
    from pipeline.config import load_config

    cfg = load_config(["experiment=smoke", "data.lead_time_range=[3,3]", "policy.kind=mlp", "penalty.weights=[10.0]",
                       "penalty.probe_share=0.0", "train.horizon=30", "train.grad_clip=0"])
    demand = torch.poisson(torch.full((64, 120), 5.0), generator=torch.Generator().manual_seed(0))
    return cfg, make_batch(demand.numpy(), lead_time=3, p=9.0)


def _step_gradients(batch, cfg, sync=None):
    from pipeline.core.training import TrainSpec, train_step
    from pipeline.core.policy import build_policy

    torch.manual_seed(0)
    policy = build_policy(cfg.policy, 3, PROBLEM)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)
    torch.manual_seed(123)  # the penalised period: the same draw on every worker
    out = train_step(policy, optimizer, PROBLEM, batch, 50, TrainSpec.from_config(cfg, PROBLEM, 3), sync)
    assert out["penalty"] > 0
    return [p.grad.clone() for p in policy.parameters()]


def _ddp_worker(rank, port, folder):
    import os

    import torch.distributed as dist

    from pipeline.core.training import gradient_averager

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg, batch = _ddp_setup()
    half = batch.select(list(range(32 * rank, 32 * rank + 32)))
    torch.save(_step_gradients(half, cfg, gradient_averager(2)), f"{folder}/grads_{rank}.pt")
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def test_penalty_gradients_under_two_data_parallel_workers_equal_one_worker_on_the_whole_batch(tmp_path):
    """Two gloo workers, each with half the products, the DirectBackprop loss plus the
    penalty, gradients averaged by ``gradient_averager`` (what each Ray Train worker uses):
    the same gradients as one worker with every product."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2)
    cfg, batch = _ddp_setup()
    whole = _step_gradients(batch, cfg)
    for rank in (0, 1):
        synced = torch.load(tmp_path / f"grads_{rank}.pt")
        for a, b in zip(synced, whole):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a - b).abs().max()


def test_sign_and_ordering_violations_keep_their_size_in_direction_where_the_jacobian_is_tiny():
    """A nearly saturated order (J = 1e-9 x a row that breaks the ordering and the sign):
    the raw violation is 1e-9-small, the direction's is not; the slope bound -1 is
    measured on J itself in both."""
    J = 1e-9 * torch.tensor([[[0.2, -0.5, -1.0]]], dtype=torch.float64)  # dq/dy0 > 0; dq/dy1 > dq/dy2 holds
    raw = violations(J, PROPS, NAMES, ["order"])
    unit = violations(J, PROPS, NAMES, ["order"], direction=True)
    row = J[0, 0] / (J[0, 0].norm() + DIRECTION_EPS)
    assert float(raw.max()) < 1e-9
    assert torch.isclose(unit[0, 0], row[0])  # on_hand bound: relu(dq/dy0 - 0) on the direction
    assert float(unit[0, 3]) == 0.0 and float(unit[0, 4]) == 0.0  # the orderings hold
    steep = torch.tensor([[[-3.0, -0.5, -0.2]]], dtype=torch.float64)  # slope -3 < -1, orderings broken
    u = violations(steep, PROPS, NAMES, ["order"], direction=True)
    assert torch.isclose(u[0, 0], torch.tensor(2.0, dtype=torch.float64))  # -1 bound on J: 2 too steep
    assert float(u[0, 3]) > 0 and float(u[0, 4]) > 0  # dq/dy1 <= dq/dy0 and dq/dy2 <= dq/dy1 broken


def test_a_one_entry_state_is_penalised_on_its_jacobian_so_the_penalty_has_a_gradient():
    """Lost sales with L <= 1 has one state entry, whose direction is only a sign (no
    gradient): there the sign condition is measured on J, with J's size and gradient."""
    props, names = PROBLEM.claimed_properties(1), PROBLEM.state_names(1)  # -1 <= dq/dy0 <= 0
    J = torch.tensor([[[0.3]], [[-0.2]], [[-1.5]]], dtype=torch.float64, requires_grad=True)
    size = violations(J, props, names, ["order"], direction=True)
    assert torch.allclose(size[:, 0], torch.tensor([0.3, 0.0, 0.5], dtype=torch.float64))
    penalty(size, torch.ones(1, dtype=torch.float64)).backward()
    assert torch.allclose(J.grad[:, 0, 0], torch.tensor([1 / 3, 0.0, -1 / 3], dtype=torch.float64))


def test_penalty_ramp_grows_linearly_to_the_full_weight():
    from pipeline.core.training import penalty_ramp

    assert penalty_ramp(0.0, 0.0) == 1.0  # no ramp: full weight from the first step
    assert penalty_ramp(4.0, 0.0) == 0.0 and penalty_ramp(4.0, 1.0) == 0.25 and penalty_ramp(4.0, 9.0) == 1.0
