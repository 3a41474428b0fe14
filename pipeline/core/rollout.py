"""Roll any policy through a problem's simulator, and the DirectBackprop objective.

A policy (``pipeline.core.protocols.Policy``) is anything with ``prepare(batch, start,
horizon) -> context`` and ``act(context, t, state) -> actions [B, A]`` (or ``[B]`` for a
single action): the network and every heuristic alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.protocols import Policy, Problem


def action_matrix(action: Tensor) -> Tensor:
    """A policy's actions as [B, A] (a single-action policy may return [B])."""
    return action[:, None] if action.ndim == 1 else action


@dataclass
class Trajectory:
    cost: Tensor     # [B, T]
    sales: Tensor    # [B, T]
    demand: Tensor   # [B, T]
    held: Tensor     # [B, T]
    lost: Tensor     # [B, T]
    waste: Tensor    # [B, T]
    actions: Tensor  # [B, T, A]
    position: Tensor  # [B, T]: inventory position (units on hand and on order) after each period
    opening: Tensor   # [B]: ... and before the first
    states: Tensor | None = None  # [B, T, W] state at each decision, if recorded
    context: object = None        # what policy.prepare returned (for the structure penalty)

    @property
    def orders(self) -> Tensor:
        """The first action (the order) [B, T]."""
        return self.actions[:, :, 0]


def rollout(problem: Problem, policy: Policy, batch: ProductBatch, start: int, horizon: int, width: int,
            round_actions: bool = False, initial_state: Tensor | None = None,
            record_states: bool = False) -> Trajectory:
    if start + horizon > batch.periods:
        raise ValueError(f"rollout of {horizon} periods from period {start} runs past the "
                         f"{batch.periods} periods of history")
    ctx = policy.prepare(batch, start, horizon)
    state = problem.initial_state(batch, width) if initial_state is None else initial_state
    setup = problem.setup(batch, width)
    demand = batch.demand[:, start:start + horizon].t().contiguous()  # [T, B]: each period's contiguous
    opening = state.sum(dim=1)
    out = {k: [] for k in ("cost", "sales", "held", "lost", "waste", "actions", "states", "position")}
    for t in range(horizon):
        if record_states:
            out["states"].append(state)
        action = action_matrix(policy.act(ctx, t, state))
        if round_actions:  # the gradient passes straight through the rounding
            action = action + (torch.round(action) - action).detach() if action.requires_grad else torch.round(action)
        step = problem.step(state, action, demand[t], batch, setup)
        state = step.next_state
        for k in ("cost", "sales", "held", "lost", "waste"):
            out[k].append(getattr(step, k))
        out["actions"].append(action)
        out["position"].append(state.sum(dim=1))
    # stacked period-major ([T, B, ...], contiguous copies) and viewed as [B, T, ...]:
    # stacking along dim 1 scatters every period's values and is many times slower
    stacked = {k: torch.stack(v).transpose(0, 1) for k, v in out.items() if v}
    return Trajectory(demand=batch.demand[:, start:start + horizon], states=stacked.pop("states", None),
                      context=ctx, opening=opening, **stacked)


def period_loss(traj: Trajectory, batch: ProductBatch, objective: str, stock_at_cost: bool = True) -> Tensor:
    """What is minimised each period: cost, or minus ``period_reward`` (``stock_at_cost=False``:
    minus revenue minus cost, which makes units bought in a warm-up free)."""
    if objective == "reward" and stock_at_cost:
        return -period_reward(traj, batch)
    return objective_loss(traj.cost, traj.sales, batch.price[:, None], objective)


def period_reward(traj: Trajectory, batch: ProductBatch) -> Tensor:
    """Revenue minus cost each period [B, T], with the stock valued at unit cost: plus
    ``unit_cost`` x the change in the inventory position. Summed over any window this is
    the window's revenue minus its costs minus the unit cost of the stock it opened with
    plus that of the stock it closed with, so units bought in periods left out of a loss
    or a score (a warm-up) are not free (docs/favorita.md, The study). Over a long run
    it is revenue minus cost per period; the DP's criterion is unchanged."""
    change = torch.diff(traj.position, dim=1, prepend=traj.opening[:, None])
    return batch.price[:, None] * traj.sales - traj.cost + batch.unit_cost[:, None] * change


def objective_loss(cost: Tensor, sales: Tensor, price: Tensor, objective: str) -> Tensor:
    if objective == "cost":
        return cost
    if objective == "reward":
        return cost - price * sales
    raise ValueError(f"unknown objective {objective!r}; use cost or reward")


def directbackprop_loss(per_period: Tensor, warmup: int, discount: float) -> Tensor:
    """Discounted per-period loss after the warm-up, normalised to a per-period average,
    averaged over products: the number backpropagated through the whole rollout."""
    T = per_period.shape[1]
    weights = discount ** torch.arange(T - warmup, dtype=per_period.dtype, device=per_period.device)
    weights = weights / weights.sum()
    return (per_period[:, warmup:] * weights).sum(dim=1).mean()
