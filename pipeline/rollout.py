"""Roll any policy through a problem's simulator, and the DirectBackprop objective.

A policy is anything with ``prepare(batch, start, horizon) -> context`` and
``act(context, t, state) -> orders [B]``: the network and every baseline alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.data import ProductBatch


@dataclass
class Trajectory:
    cost: Tensor    # [B, T]
    sales: Tensor   # [B, T]
    demand: Tensor  # [B, T]
    held: Tensor    # [B, T]
    orders: Tensor  # [B, T]
    states: Tensor | None = None  # [B, T, W] state at each decision, if recorded


def rollout(problem, policy, batch: ProductBatch, start: int, horizon: int, width: int,
            round_actions: bool = False, initial_state: Tensor | None = None,
            record_states: bool = False) -> Trajectory:
    if start + horizon > batch.periods:
        raise ValueError(f"rollout of {horizon} periods from period {start} runs past the "
                         f"{batch.periods} periods of history")
    ctx = policy.prepare(batch, start, horizon)
    state = problem.initial_state(batch, width) if initial_state is None else initial_state
    slots = problem.arrival_slots(batch, width)
    cost, sales, held, orders, states = [], [], [], [], []
    for t in range(horizon):
        if record_states:
            states.append(state)
        order = policy.act(ctx, t, state)
        if round_actions:
            order = torch.round(order)
        step = problem.step(state, order, batch.demand[:, start + t], batch, slots)
        state = step.next_state
        cost.append(step.cost), sales.append(step.sales), held.append(step.held), orders.append(order)
    return Trajectory(torch.stack(cost, 1), torch.stack(sales, 1),
                      batch.demand[:, start:start + horizon], torch.stack(held, 1),
                      torch.stack(orders, 1), torch.stack(states, 1) if record_states else None)


def period_loss(traj: Trajectory, batch: ProductBatch, objective: str) -> Tensor:
    """What is minimised each period: cost, or minus reward (revenue minus cost)."""
    if objective == "cost":
        return traj.cost
    if objective == "reward":
        return traj.cost - batch.price[:, None] * traj.sales
    raise ValueError(f"unknown objective {objective!r}; use cost or reward")


def directbackprop_loss(per_period: Tensor, warmup: int, discount: float) -> Tensor:
    """Discounted per-period loss after the warm-up, normalised to a per-period average,
    averaged over products: the number backpropagated through the whole rollout."""
    T = per_period.shape[1]
    weights = discount ** torch.arange(T - warmup, dtype=per_period.dtype, device=per_period.device)
    weights = weights / weights.sum()
    return (per_period[:, warmup:] * weights).sum(dim=1).mean()
