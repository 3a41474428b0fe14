"""The fast rollout (pipeline.core.rollout, OrderPolicy.act, the problems' steps) against a
straightforward reference written here the way the code first read: the exogenous part of
the first layer precomputed for every period and indexed per period, a separate state
layer, out-of-place ELUs, lost sales with the pipeline shifted by concatenation, per-period
lists stacked along the period axis. In float64 every trajectory field, the loss and the
gradient of the loss (and of the structure penalty) in the policy's parameters must agree
to rounding; in float32 to float tolerance."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.batch import batch_from_columns
from pipeline.data.synthetic import synthetic_population
from pipeline.core.penalty import jacobian
from pipeline.core.policy import OrderPolicy, demand_scale, running_features, running_moments, static_features
from pipeline.core.problems import get_problem
from pipeline.core.problems.base import advance_pipeline, lead_time_slots
from pipeline.core.rollout import directbackprop_loss, rollout
from conftest import conv1d_encoder

START, HORIZON = 40, 12


class ReferencePolicy:
    """``OrderPolicy`` (kind mlp or cnn, no features) computed the straightforward way, on
    the same modules and weights (the encoder with ``torch.nn.Conv1d``)."""

    def __init__(self, net: OrderPolicy):
        self.net = net

    def prepare(self, batch, start, horizon):
        net = self.net
        scale = demand_scale(batch, start)
        mean, std = running_moments(batch.demand, start, horizon)
        parts = [static_features(batch, scale)[:, None, :].expand(-1, horizon, -1),
                 running_features(mean, std, scale)]
        if net.encoder is not None:
            x = batch.demand[:, start - net.window:start + horizon - 1] / scale[:, None]
            parts.append(conv1d_encoder(net.encoder, x))
        return net.first_exo(torch.cat(parts, dim=2)), scale  # [B, T, H]

    def act(self, ctx, t, state):
        exogenous, scale = ctx
        scaled = state / scale[:, None]
        z = exogenous[:, t] + self.net.first_endo(torch.cat([scaled, scaled.sum(dim=1, keepdim=True)], dim=1))
        for layer in self.net.head:
            z = F.elu(z) if isinstance(layer, nn.ELU) else layer(z)
        return F.softplus(z) * scale[:, None]


def reference_lost_sales_step(state, action, demand, batch, slots):
    order = action[:, 0]
    available = state[:, 0] + slots[:, 0] * order
    held = torch.relu(available - demand)
    lost = torch.relu(demand - available)
    cost = batch.holding_cost * held + batch.shortage_cost * lost + batch.unit_cost * order
    shifted = torch.cat([state[:, 1:], torch.zeros_like(order)[:, None]], dim=1) + slots[:, 1:] * order[:, None]
    next_state = torch.cat([(held + shifted[:, 0])[:, None], shifted[:, 1:]], dim=1)
    return next_state, {"cost": cost, "sales": torch.minimum(available, demand), "held": held, "lost": lost,
                        "waste": torch.zeros_like(held)}


def reference_rollout(problem, policy, batch, start, horizon, width):
    ctx = policy.prepare(batch, start, horizon)
    state = problem.initial_state(batch, width)
    setup = problem.setup(batch, width)
    out = {k: [] for k in ("cost", "sales", "held", "lost", "waste", "actions", "states")}
    for t in range(horizon):
        out["states"].append(state)
        action = policy.act(ctx, t, state)
        if action.ndim == 1:
            action = action[:, None]
        demand = batch.demand[:, start + t]
        if problem.name == "lost_sales":
            state, fields = reference_lost_sales_step(state, action, demand, batch, setup)
        else:
            step = problem.step(state, action, demand, batch, setup)
            state, fields = step.next_state, {k: getattr(step, k) for k in ("cost", "sales", "held", "lost", "waste")}
        for k, v in fields.items():
            out[k].append(v)
        out["actions"].append(action)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def population(problem_name, lead_times, dtype, n=64):
    from pipeline.config import load_config

    overrides = [f"problem={problem_name}", f"data.num_products={n}",
                 "data.unit_cost_range=[1.5,3.0]", "data.price_range=[0.0,5.0]"]
    if lead_times is not None:
        overrides.append(f"data.lead_time_range=[{lead_times[0]},{lead_times[1]}]")
    cfg = load_config(overrides)
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    batch = batch_from_columns(synthetic_population(cfg.data, 3), dtype=dtype)
    return problem, batch, problem.state_width(cfg.data.lead_time_range[1])


def compare(problem_name, lead_times, kind, dtype, rtol):
    problem, batch, width = population(problem_name, lead_times, dtype)
    torch.manual_seed(1)
    net = OrderPolicy(width, kind=kind, hidden=(32, 32, 32), n_actions=len(problem.actions)).to(dtype)
    results = []
    for run in (lambda: reference_rollout(problem, ReferencePolicy(net), batch, START, HORIZON, width),
                lambda: vars(rollout(problem, net, batch, START, HORIZON, width, record_states=True))):
        traj = run()
        loss = directbackprop_loss(traj["cost"] - batch.price[:, None] * traj["sales"], 2, 0.99)
        net.zero_grad()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters()}
        results.append((traj, loss.detach(), grads))
    (ref, ref_loss, ref_grads), (new, new_loss, new_grads) = results
    for k in ("cost", "sales", "held", "lost", "waste", "actions", "states"):
        torch.testing.assert_close(new[k].detach(), ref[k].detach(), rtol=rtol, atol=rtol, msg=k)
    torch.testing.assert_close(new_loss, ref_loss, rtol=rtol, atol=0)
    for name, g in ref_grads.items():  # relative to each gradient's size: float sums are reordered
        scale = float(g.abs().max()) + 1e-30
        torch.testing.assert_close(new_grads[name] / scale, g / scale, rtol=0, atol=rtol, msg=name)
    return new


@pytest.mark.parametrize("lead_time", [0, 2, 4])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_lost_sales_rollout_and_gradients_equal_the_reference(lead_time, kind):
    compare("lost_sales", (lead_time, lead_time), kind, torch.float64, 1e-10)
    compare("lost_sales", (lead_time, lead_time), kind, torch.float32, 1e-4)


def test_mixed_lead_times_and_integer_trajectories():
    new = compare("lost_sales", (0, 4), "mlp", torch.float64, 1e-10)
    assert new["states"].shape == (64, HORIZON, 4)


@pytest.mark.parametrize("problem_name", ["perishable", "dual_sourcing", "removal"])
def test_other_problems_equal_the_reference(problem_name):
    compare(problem_name, None, "mlp", torch.float64, 1e-10)
    compare(problem_name, None, "cnn", torch.float32, 1e-4)


def test_advance_pipeline_is_the_concatenation_it_replaced():
    g = torch.Generator().manual_seed(0)
    for P in (0, 1, 3):
        lead_time = torch.randint(0, P + 2, (50,), generator=g)
        slots = lead_time_slots(lead_time, P + 1, torch.float32)
        pipeline, order = torch.rand(50, P, generator=g) * 10, torch.rand(50, generator=g) * 10
        shifted = torch.cat([pipeline, torch.zeros(50, 1)], dim=1) + slots[:, 1:] * order[:, None]
        arriving, rest = advance_pipeline(pipeline, order, slots)
        assert torch.equal(arriving, shifted[:, 0]) and torch.equal(rest, shifted[:, 1:])


def test_penalty_jacobian_and_its_gradient_equal_the_reference():
    _, batch, width = population("lost_sales", (4, 4), torch.float64)
    torch.manual_seed(2)
    net = OrderPolicy(width, kind="cnn", hidden=(32, 32)).double()
    state = torch.rand(batch.size, width, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 20
    out = []
    for policy in (ReferencePolicy(net), net):
        actions, J = jacobian(policy, policy.prepare(batch, START, HORIZON), 5, state)
        net.zero_grad()
        (J.square().sum() + actions.sum()).backward()  # through the Jacobian: double backward
        out.append((actions.detach(), J.detach(), [p.grad.clone() for p in net.parameters()]))
    (a0, J0, g0), (a1, J1, g1) = out
    torch.testing.assert_close(a1, a0, rtol=1e-10, atol=0)
    torch.testing.assert_close(J1, J0, rtol=1e-10, atol=1e-12)
    for x, y in zip(g1, g0):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9 * float(y.abs().max()))
    assert np.isfinite(J1.numpy()).all()
