"""The structure penalty: a policy's Jacobian with respect to the endogenous state held to the
properties of ``pipeline.core.properties``, and the violation metrics. How: docs/sipn.md, The structure penalty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch, shocked
from pipeline.core.properties import Property, parse_property
from pipeline.core.protocols import Policy, Problem
from pipeline.core.rollout import Trajectory, action_matrix, rollout


def jacobian(policy: Policy, ctx, t: int, state: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
    """(actions [B, A], J [B, A, W]) of ``policy.act(ctx, t, state)`` at ``state``."""
    state = state.detach().requires_grad_(True)
    actions = action_matrix(policy.act(ctx, t, state))
    rows = [torch.autograd.grad(actions[:, a].sum(), state, create_graph=create_graph, retain_graph=True)[0]
            for a in range(actions.shape[1])]
    return actions, torch.stack(rows, dim=1)


def violations(J: Tensor, properties: list[Property], state_names: list[str],
               action_names: list[str], direction: bool = False) -> Tensor:
    """Size of each property's violation in each state [B, P] (0 where it holds).

    With ``direction`` the parts of a property that only concern signs and orderings
    (a bound at 0, an ordering) are measured on the direction of the action's Jacobian row
    ``J / |J|`` instead of ``J``: they hold for one exactly when they hold for the other,
    but where the action is nearly saturated (an order of almost 0 through the softplus)
    ``J`` and its gradient are exponentially small while the direction's are not. The
    penalty uses this; the violation metrics measure ``J`` itself. A row of one entry (a
    one-dimensional state) has only a sign for a direction, which has no gradient, so
    there ``J`` is used."""
    unit = J / (J.norm(dim=2, keepdim=True) + DIRECTION_EPS) if direction and J.shape[2] > 1 else J
    out = []
    for prop in properties:
        a, i = action_names.index(prop.action), state_names.index(prop.coord)
        if prop.other is None:
            lo = unit if prop.lo == 0 else J
            hi = unit if prop.hi == 0 else J
            v = torch.relu(prop.lo - lo[:, a, i]) + torch.relu(hi[:, a, i] - prop.hi)
        else:
            v = torch.relu(unit[:, a, i] - unit[:, a, state_names.index(prop.other)])
        out.append(v)
    return torch.stack(out, dim=1)


DIRECTION_EPS = 1e-12  # below this Jacobian norm the direction fades to 0 (nothing to correct)


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
    coordinate: from 0 to ``widen`` x the largest visited value, and down to ``widen`` x the
    smallest where a coordinate goes negative (a backlog): the out-of-distribution probes
    [B, W]."""
    low, high = probe_box(states, widen)
    u = torch.rand(states.shape, generator=generator, dtype=states.dtype, device=states.device)
    return low + u * (high - low)


def probe_box(states: Tensor, widen: float) -> tuple[Tensor, Tensor]:
    """(low [W], high [W]) of the probe box of ``probe_states`` for visited ``states`` [N, W]."""
    s = states.detach()
    return s.amin(dim=0).clamp_max(0.0) * widen, s.amax(dim=0).clamp_min(1.0) * widen


@dataclass(frozen=True)
class ShockProbes:
    """Probes where demand shocks lead: the policy's context after a level shift of demand
    (x a factor drawn per product, log-uniform on ``factors``, from 1 .. ``max_lag``
    periods before the penalised period on), with probe states from the wide box.
    ``share``: their weight in the penalty beside the nominal context's states (0: none)."""
    share: float = 0.0
    factors: tuple[float, float] = (0.25, 4.0)
    max_lag: int = 12


def shocked_context(policy: Policy, batch: ProductBatch, start: int, t: int, shocks: ShockProbes,
                    discrete: bool, generator: torch.Generator | None = None):
    """The policy's context for decision periods ``start`` .. ``start + t`` of ``batch`` with
    its demand shifted as ``shocks`` says, before period ``start + t``."""
    lag = 1 + int(torch.randint(shocks.max_lag, (1,), generator=generator))
    lo, hi = math.log(shocks.factors[0]), math.log(shocks.factors[1])
    u = torch.rand(batch.size, 1, generator=generator, dtype=batch.demand.dtype)
    factor = torch.exp(lo + u.to(batch.demand.device) * (hi - lo))
    at = max(0, start + t - lag)  # a level shift ("up" and "down" differ only in the factor)
    return policy.prepare(shocked(batch, "up", at, factor, discrete), start, t + 1)


def structure_penalty(policy: Policy, traj: Trajectory, properties: list[Property], weights: Tensor, state_names: list[str],
                      action_names: list[str], probe_share: float, probe_widen: float,
                      generator: torch.Generator | None = None, shocks: ShockProbes = ShockProbes(),
                      batch: ProductBatch | None = None, start: int = 0,
                      discrete: bool = False) -> tuple[Tensor, dict[str, float]]:
    """The penalty at one random decision period of a recorded rollout: each product's
    visited state there, a ``probe_share`` of them replaced by probes from the wider box;
    with ``shocks.share`` > 0 (and the rollout's ``batch`` and ``start``), also the wide
    probes in the context after a demand shock (``shocked_context``), weighted
    ``shocks.share`` against ``1 - shocks.share`` for the nominal context. Returns the
    weighted penalty (differentiable) and the violation rates in and out of the visited
    region (and under shocks)."""
    T = traj.states.shape[1]
    t = int(torch.randint(T, (1,), generator=generator))
    visited = traj.states[:, t].detach()
    n_out = round(probe_share * len(visited))
    state = torch.cat([probe_states(visited, probe_widen, generator)[:n_out], visited[n_out:]])
    _, J = jacobian(policy, traj.context, t, state)
    loss = penalty(violations(J, properties, state_names, action_names, direction=True), weights)
    bad = (violations(J.detach(), properties, state_names, action_names) > 1e-6).any(dim=1).double()
    metrics = {}
    if n_out:
        metrics["violation_rate_out"] = float(bad[:n_out].mean())
    if n_out < len(bad):
        metrics["violation_rate_in"] = float(bad[n_out:].mean())
    if shocks.share > 0 and batch is not None:
        ctx = shocked_context(policy, batch, start, t, shocks, discrete, generator)
        _, Js = jacobian(policy, ctx, t, probe_states(visited, probe_widen, generator))
        shock_loss = penalty(violations(Js, properties, state_names, action_names, direction=True), weights)
        loss = (1 - shocks.share) * loss + shocks.share * shock_loss
        bad = (violations(Js.detach(), properties, state_names, action_names) > 1e-6).any(dim=1).double()
        metrics["violation_rate_shock"] = float(bad.mean())
    metrics["penalty"] = float(loss.detach())
    return loss, metrics


def structure_metrics(policy: Policy, problem: Problem, batch: ProductBatch, start: int, horizon: int, width: int,
                      properties: list[Property], probe_widen: float, seed: int = 0,
                      skip: int = 0, initial_state: Tensor | None = None) -> dict[str, float]:
    """Violation metrics of a differentiable policy on ``batch``: at ``horizon`` decision
    periods of a rollout from ``start`` (after its first ``skip`` periods; from
    ``initial_state`` if given), in the visited states (``in/...``) and in as many probe
    states from the wider box (``out/...``); plus the share of states violating any property."""
    with torch.no_grad():
        traj = rollout(problem, policy, batch, start, skip + horizon, width, record_states=True,
                       initial_state=initial_state)
    visited = traj.states[:, skip:]
    g = torch.Generator(device=visited.device).manual_seed(seed)
    probes = probe_states(visited.reshape(-1, width), probe_widen, g).reshape(visited.shape)
    names, actions, out = problem.state_names(width), list(problem.actions), {}
    for region, states in (("in", visited), ("out", probes)):
        sizes = []
        for t in range(horizon):
            with torch.enable_grad():
                _, J = jacobian(policy, traj.context, skip + t, states[:, t], create_graph=False)
            sizes.append(violations(J, properties, names, actions).detach())
        size = torch.cat(sizes)
        out[f"{region}/violation_rate"] = float((size > 1e-6).any(dim=1).double().mean())
        out.update({f"{region}/{k}": v for k, v in violation_metrics(size, properties).items()})
    return out


def penalty_properties(problem: Problem, width: int, texts: list[str]) -> list[Property]:
    """The properties a run enforces: ``texts`` parsed and checked against the problem's
    action and state names, or the problem's defaults when empty."""
    if not texts:  # the claims the exact DP confirmed (docs/structure.md)
        return problem.default_properties(width)
    props = [parse_property(t) for t in texts]
    names, actions = problem.state_names(width), list(problem.actions)
    for p in props:
        for name in (p.coord, p.other):
            if name is not None and name not in names:
                raise ValueError(f"{p}: no state entry {name!r}; known: {', '.join(names)}")
        if p.action not in actions:
            raise ValueError(f"{p}: no action {p.action!r}; known: {', '.join(actions)}")
    return props
