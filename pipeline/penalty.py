"""The structure penalty: a policy's Jacobian with respect to the endogenous state, held
to the properties of ``pipeline.structure`` (GUIDE 2.5), and the violation metrics.

For a batch of states the Jacobian ``J[b, a, i] = d action_a / d state_i`` comes from
autograd (one backward pass per action; products are independent, so the gradient of the
batch sum is each product's own row). A bound ``lo <= J <= hi`` is violated by
``relu(lo - J) + relu(J - hi)``, an ordering ``J_i <= J_j`` by ``relu(J_i - J_j)``. The
penalty is the weighted mean violation; it is differentiable in the network's weights
(``create_graph=True``), so it trains with the DirectBackprop loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pipeline.structure import Property


def jacobian(policy, ctx, t: int, state: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """(actions [B, A], J [B, A, W]) of ``policy.act(ctx, t, state)`` at ``state``."""
    state = state.detach().requires_grad_(True)
    actions = policy.act(ctx, t, state)
    if actions.ndim == 1:
        actions = actions[:, None]
    rows = [torch.autograd.grad(actions[:, a].sum(), state, create_graph=create_graph, retain_graph=True)[0]
            for a in range(actions.shape[1])]
    return actions, torch.stack(rows, dim=1)


def violations(J: Tensor, properties: list[Property], state_names: list[str],
               action_names: list[str]) -> Tensor:
    """Size of each property's violation in each state [B, P] (0 where it holds)."""
    out = []
    for prop in properties:
        d = J[:, action_names.index(prop.action), state_names.index(prop.coord)]
        if prop.other is None:
            v = torch.relu(prop.lo - d) + torch.relu(d - prop.hi)
        else:
            v = torch.relu(d - J[:, action_names.index(prop.action), state_names.index(prop.other)])
        out.append(v)
    return torch.stack(out, dim=1)


def penalty(size: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean violation: ``size`` [B, P] from ``violations``, one weight per property."""
    return (size.mean(dim=0) * weights).sum()


def violation_metrics(size: Tensor, properties: list[Property], tol: float = 1e-6) -> dict[str, float]:
    """Per property (named by its ``slug``): the share of states that violate it and the
    mean violation size."""
    out, size = {}, size.detach()
    for i, prop in enumerate(properties):
        out[f"{prop.slug}/violation_rate"] = float((size[:, i] > tol).double().mean())
        out[f"{prop.slug}/violation_size"] = float(size[:, i].mean())
    return out


def probe_states(states: Tensor, widen: float, generator: torch.Generator | None = None) -> Tensor:
    """States drawn uniformly from a box ``widen`` times as wide as the visited one in each
    coordinate (from 0 to ``widen`` x the largest visited value): the out-of-distribution
    probes [B, W]."""
    top = states.detach().amax(dim=0).clamp_min(1.0) * widen
    u = torch.rand(states.shape, generator=generator, dtype=states.dtype, device=states.device)
    return u * top


def structure_penalty(policy, traj, properties: list[Property], weights: Tensor, state_names: list[str],
                      action_names: list[str], probe_share: float, probe_widen: float,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
    """The penalty at one random decision period of a recorded rollout: each product's
    visited state there, a ``probe_share`` of them replaced by probes from the wider box.
    Returns the weighted penalty (differentiable) and the violation rates in and out of
    the visited region."""
    T = traj.states.shape[1]
    t = int(torch.randint(T, (1,), generator=generator))
    visited = traj.states[:, t].detach()
    n_out = round(probe_share * len(visited))
    state = torch.cat([probe_states(visited, probe_widen, generator)[:n_out], visited[n_out:]])
    _, J = jacobian(policy, traj.context, t, state)
    size = violations(J, properties, state_names, action_names)
    bad = (size.detach() > 1e-6).any(dim=1).double()
    metrics = {"penalty": float(penalty(size, weights).detach())}
    if n_out:
        metrics["violation_rate_out"] = float(bad[:n_out].mean())
    if n_out < len(bad):
        metrics["violation_rate_in"] = float(bad[n_out:].mean())
    return penalty(size, weights), metrics


def structure_metrics(policy, problem, batch, start: int, horizon: int, width: int,
                      properties: list[Property], probe_widen: float, seed: int = 0) -> dict[str, float]:
    """Violation metrics of a differentiable policy on ``batch``: at every decision period
    of a rollout from ``start``, in the visited states (``in/...``) and in as many probe
    states from the wider box (``out/...``); plus the share of states violating any property."""
    from pipeline.rollout import rollout

    with torch.no_grad():
        traj = rollout(problem, policy, batch, start, horizon, width, record_states=True)
    g = torch.Generator(device=traj.states.device).manual_seed(seed)
    probes = probe_states(traj.states.reshape(-1, width), probe_widen, g).reshape(traj.states.shape)
    names, actions, out = problem.state_names(width), list(problem.actions), {}
    for region, states in (("in", traj.states), ("out", probes)):
        sizes = []
        for t in range(horizon):
            with torch.enable_grad():
                _, J = jacobian(policy, traj.context, t, states[:, t], create_graph=False)
            sizes.append(violations(J, properties, names, actions).detach())
        size = torch.cat(sizes)
        out[f"{region}/violation_rate"] = float((size > 1e-6).any(dim=1).double().mean())
        out.update({f"{region}/{k}": v for k, v in violation_metrics(size, properties).items()})
    return out
