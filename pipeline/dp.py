"""Exact dynamic programming for small instances: relative value iteration (average cost).

Lost sales with lead time L >= 1 (GUIDE 2.1), i.i.d. demand with a known pmf. The state is
``(on_hand, pipeline_1, ..., pipeline_{L-1})``; on-hand is truncated at ``max_on_hand``
(stock above it is treated as ``max_on_hand``) and orders at ``max_order``. The expectation
over demand is a matrix product: next on-hand is ``(y0 - D)^+ + y1``, so for every fixed
remainder of the next state it is ``P @ Hankel(V)`` with ``P[a, m] = P((a - D)^+ = m)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DPSolution:
    average_cost: float
    policy: Tensor        # order quantity for every state, shape [N+1] + [Q+1] * (L-1)
    values: Tensor        # relative values, same shape
    iterations: int
    span: float           # span of the last Bellman difference: the cost is exact to +-span/2
    max_on_hand: int
    max_order: int


def _leftover_matrix(pmf: Tensor, n: int) -> Tensor:
    """P[a, m] = P((a - D)^+ = m) for a, m in 0..n."""
    a = torch.arange(n + 1)[:, None]
    m = torch.arange(n + 1)[None, :]
    d = a - m  # demand that leaves m units from a
    inside = (d >= 0) & (d < len(pmf)) & (m >= 1)
    P = torch.where(inside, pmf[d.clamp(0, len(pmf) - 1)], torch.zeros((), dtype=pmf.dtype))
    P[:, 0] = 1.0 - P[:, 1:].sum(dim=1)
    return P


def lost_sales_rvi(pmf: Tensor, holding: float, shortage: float, lead_time: int,
                   max_on_hand: int, max_order: int, unit_cost: float = 0.0,
                   tol: float = 1e-6, max_iter: int = 10_000,
                   fixed: Tensor | None = None) -> DPSolution:
    """Minimal long-run average cost and an optimal order table (lead time >= 1).

    With ``fixed`` (an order table of the state shape, values in 0..max_order) it evaluates
    that policy instead: the exact long-run average cost of any stationary policy."""
    if lead_time < 1:
        raise ValueError("lost_sales_rvi needs lead_time >= 1; lead time 0 is the newsvendor")
    pmf = pmf.double()
    N, Q, L = max_on_hand, max_order, lead_time
    d = torch.arange(len(pmf), dtype=torch.float64)
    y = torch.arange(N + 1, dtype=torch.float64)[:, None]
    tail = float((1.0 - pmf.sum()).clamp_min(0.0))  # demand beyond the pmf's support: lost
    cost = (holding * (pmf * torch.relu(y - d)).sum(1) + shortage * (pmf * torch.relu(d - y)).sum(1)
            + shortage * tail * (len(pmf) - y[:, 0]))
    P = _leftover_matrix(pmf, N)
    hankel = torch.clamp(torch.arange(N + 1)[:, None] + torch.arange(Q + 1)[None, :], max=N)
    shape = [N + 1] + [Q + 1] * (L - 1)
    order_cost = unit_cost * torch.arange(Q + 1, dtype=torch.float64)
    V = torch.zeros(shape, dtype=torch.float64)
    for it in range(1, max_iter + 1):
        # G[a, b, r]: expected value after this period, on hand a, arriving b, rest r of the next state
        G = torch.einsum("am,mbr->abr", P, V.reshape(N + 1, -1)[hankel])
        if L == 1:  # what arrives next period is this period's order: b is the order
            G = G[:, :, 0] + order_cost
        else:  # the last axis of the next state is this period's order
            G = G.reshape(N + 1, Q + 1, -1, Q + 1) + order_cost
        if fixed is None:
            best, policy = G.min(dim=-1)
        else:
            policy = fixed.reshape(G.shape[:-1]).long()
            best = G.gather(-1, policy[..., None])[..., 0]
        TV = cost.reshape([N + 1] + [1] * (L - 1)) + best.reshape(shape)
        diff = TV - V
        lo, hi = float(diff.min()), float(diff.max())
        V = TV - TV.reshape(-1)[0]
        if hi - lo < tol:
            break
    return DPSolution((lo + hi) / 2, policy.reshape(shape), V, it, hi - lo, N, Q)


def lost_sales_grid(mean: float, std: float, lead_time: int) -> tuple[int, int]:
    """A state grid wide enough for an instance: (max_on_hand, max_order)."""
    L = lead_time
    return math.ceil(mean * (L + 1) + 4 * std * math.sqrt(L + 1)), math.ceil(mean + 5 * std) + 2


def lost_sales_optimum(pmf: Tensor, holding: float, shortage: float, lead_time: int,
                       mean: float, std: float, unit_cost: float = 0.0) -> DPSolution:
    """The exact optimum on ``lost_sales_grid``; refuses when the order truncation binds."""
    N, Q = lost_sales_grid(mean, std, lead_time)
    solution = lost_sales_rvi(pmf, holding, shortage, lead_time, N, Q, unit_cost=unit_cost)
    if int(solution.policy.max()) >= Q:
        raise ValueError(f"dp: the optimal order reached the truncation {Q}; the instance is too "
                         "large for the exact DP")
    return solution


def state_grid_inventory_position(max_on_hand: int, max_order: int, lead_time: int) -> Tensor:
    """On hand plus pipeline for every state of the DP grid."""
    ip = torch.arange(max_on_hand + 1, dtype=torch.float64).reshape([-1] + [1] * (lead_time - 1))
    for j in range(1, lead_time):
        shape = [1] * lead_time
        shape[j] = -1
        ip = ip + torch.arange(max_order + 1, dtype=torch.float64).reshape(shape)
    return ip


def base_stock_table(level: float, max_on_hand: int, max_order: int, lead_time: int,
                     cap: float | None = None) -> Tensor:
    """Order up to ``level`` in inventory position, at most ``cap`` (capped base-stock)."""
    ip = state_grid_inventory_position(max_on_hand, max_order, lead_time)
    q = torch.clamp(level - ip, min=0.0, max=float(max_order if cap is None else min(cap, max_order)))
    return q.long()


@dataclass
class TablePolicy:
    """Plays a DP order table in the simulator (states beyond the table are clamped)."""

    solution: DPSolution
    lead_time: int

    def prepare(self, batch, start: int, horizon: int):
        return self.solution.policy.to(batch.demand.device)

    def act(self, table: Tensor, t: int, state: Tensor) -> Tensor:
        s = state[:, : max(1, self.lead_time)].round().long()
        index = [s[:, 0].clamp(0, self.solution.max_on_hand)]
        index += [s[:, j].clamp(0, self.solution.max_order) for j in range(1, self.lead_time)]
        return table[tuple(index)].to(state.dtype)
