"""Baseline policies (omniscient, estimated, best_constant, dp), treated by the evaluator exactly like
the network: docs/policy.md, Baselines.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.demand import demand_std, sample_demand, true_pmf
from pipeline.core.protocols import Problem
from pipeline.core.rollout import period_loss, rollout
from pipeline.core import dp


def critical_fractile(batch: ProductBatch, objective: str) -> Tensor:
    """Underage / (underage + overage) per product for a lost-sales newsvendor.
    Purchase cost is paid only on units sold in steady state, so it lowers underage."""
    h, p, c = batch.holding_cost, batch.shortage_cost, batch.unit_cost
    under = p - c + (batch.price if objective == "reward" else 0.0)
    return (under / (under + h)).clamp(0.0, 1.0)


@dataclass
class BaseStockPolicy:
    """Order up to ``levels`` (inventory position: on hand plus pipeline). With
    ``product_ids`` the levels belong to those products and any batch of them (a subset,
    a repeat) gets its own; without, they apply position by position."""

    problem: Problem
    levels: Tensor  # [B]
    product_ids: np.ndarray | None = None

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Tensor:
        return per_product(self.levels, self.product_ids, batch, "base-stock levels")

    def act(self, levels: Tensor, t: int, state: Tensor) -> Tensor:
        return order_up_to(self.problem, levels, state)


def order_up_to(problem: Problem, levels: Tensor, state: Tensor) -> Tensor:
    """Order max(0, level - inventory position) [B, A] (the problem's first action); any
    other action is zero."""
    order = torch.relu(levels - problem.inventory_position(state))[:, None]
    return torch.cat([order, order.new_zeros(order.shape[0], len(problem.actions) - 1)], dim=1)


def per_product(values: Tensor, product_ids: np.ndarray | None, batch: ProductBatch, what: str) -> Tensor:
    """A policy's per-product parameters (first axis: products) for the products of
    ``batch``: looked up by product id when ``product_ids`` is given, else position by
    position; on the batch's device and dtype."""
    if product_ids is not None:
        index = pd.Index(product_ids).get_indexer(batch.product_id)
        if (index < 0).any():
            raise KeyError(f"no {what} for products {batch.product_id[index < 0][:5]}")
        values = values[torch.as_tensor(index)]
    elif len(values) != batch.size:
        raise ValueError(f"{len(values)} {what} for a batch of {batch.size} products")
    return values.to(batch.demand.device, batch.demand.dtype)


def newsvendor_levels(batch: ProductBatch, objective: str) -> Tensor:
    """Smallest S with F(S) >= critical fractile, from the true pmf."""
    cdf = torch.cumsum(true_pmf(batch), dim=1)
    u = critical_fractile(batch, objective).double()[:, None]
    return (cdf < u - 1e-12).sum(dim=1).to(torch.float32)


def newsvendor_cost(batch: ProductBatch, levels: Tensor) -> Tensor:
    """Exact expected per-period cost h E(S-D)^+ + p E(D-S)^+ + c E min(S, D) at levels S."""
    pmf = true_pmf(batch)
    d = torch.arange(pmf.shape[1], dtype=torch.float64)[None, :]
    S = levels.double()[:, None]
    over = (pmf * torch.relu(S - d)).sum(1)
    under = (pmf * torch.relu(d - S)).sum(1)
    sold = (pmf * torch.minimum(S, d)).sum(1)
    return (batch.holding_cost.double() * over + batch.shortage_cost.double() * under
            + batch.unit_cost.double() * sold)


def simulated_level_costs(problem: Problem, batch: ProductBatch, candidates: Tensor, width: int,
                          start: int, horizon: int, warmup: int, objective: str) -> Tensor:
    """Average per-period loss of base-stock at each candidate level [B, K], all candidates
    of a product on the same demand path (common random numbers)."""
    B, K = candidates.shape
    rep = batch.select(np.repeat(np.arange(batch.size), K))
    traj = rollout(problem, BaseStockPolicy(problem, candidates.reshape(-1)), rep, start, horizon,
                   width)
    return period_loss(traj, rep, objective)[:, warmup:].mean(dim=1).reshape(B, K)


def search_levels(cost_of: callable, center: Tensor, spread: Tensor, points: int = 13) -> Tensor:
    """Coarse-to-fine integer search of a unimodal cost in S, per product.

    ``cost_of(candidates [B, K]) -> [B, K]``. Starts with a grid of ``points`` around
    ``center`` spaced ``spread / 4`` (at least 1 unit) and halves the spacing around the
    best point until it is one unit, then checks the neighbours."""
    step = torch.clamp(torch.round(spread / 4), min=1.0)
    best = torch.round(center)
    offsets = torch.arange(points, dtype=center.dtype) - points // 2
    while True:
        cand = torch.clamp(best[:, None] + step[:, None] * offsets[None, :], min=0.0)
        costs = cost_of(cand)
        best = cand.gather(1, costs.argmin(dim=1, keepdim=True))[:, 0]
        if bool((step <= 1).all()):
            return best
        step = torch.clamp(torch.floor(step / 2), min=1.0)
        offsets = torch.arange(-2, 3, dtype=center.dtype)


def omniscient_levels(problem: Problem, batch: ProductBatch, width: int, objective: str, seed: int,
                      sim_periods: int = 4000, burn_in: int = 100) -> Tensor:
    """Per-product optimal (L = 0) or best base-stock (L > 0) level from the true law."""
    levels = newsvendor_levels(batch, objective)
    lagged = (batch.lead_time > 0).nonzero()[:, 0]
    if len(lagged):
        sub = batch.select(lagged)
        rng = np.random.default_rng(seed)
        sim = sub.with_demand(torch.as_tensor(sample_demand(
            rng, sub.true_dist, sub.true_mean.numpy(), sub.true_shape.numpy(), sim_periods + 1)))
        L = sub.lead_time.to(torch.float32) + 1
        std = torch.as_tensor(demand_std(sub.true_dist, sub.true_mean.numpy(), sub.true_shape.numpy()),
                              dtype=torch.float32)
        cost_of = lambda cand: simulated_level_costs(  # noqa: E731
            problem, sim, cand, width, 1, sim_periods, burn_in, objective)
        levels[lagged] = search_levels(cost_of, sub.true_mean * L + 0.5 * std * L.sqrt(),
                                       std * L.sqrt())
    return levels


def empirical_levels(batch: ProductBatch, start: int, objective: str) -> Tensor:
    """Critical-fractile quantile of (L+1)-period demand sums in the history before start:
    the smallest observed sum whose empirical CDF reaches the fractile."""
    u = critical_fractile(batch, objective).double()
    levels = torch.empty(batch.size)
    history = batch.demand[:, :start].float()
    for L in torch.unique(batch.lead_time).tolist():
        m = batch.lead_time == L
        sums = history[m].unfold(1, L + 1, 1).sum(dim=2).sort(dim=1).values  # rolling sums
        n = sums.shape[1]
        rank = torch.clamp(torch.ceil(u[m] * n - 1e-6).long() - 1, 0, n - 1)
        levels[m] = sums.gather(1, rank[:, None])[:, 0]
    return levels


def best_constant_level(problem: Problem, batch: ProductBatch, width: int, start: int, horizon: int,
                        warmup: int, objective: str) -> float:
    """The single base-stock level with the lowest total loss over ``batch``."""
    def cost_of(cand: Tensor) -> Tensor:  # cand [1, K]
        K = cand.shape[1]
        levels = cand[0].repeat(batch.size)  # product-major: product i gets all K levels
        costs = simulated_level_costs(problem, batch, levels.reshape(batch.size, K), width,
                                      start, horizon, warmup, objective)
        return costs.mean(dim=0, keepdim=True)

    ld = batch.demand[:, :start].mean() * (batch.lead_time.float().mean() + 1)
    return float(search_levels(cost_of, ld.reshape(1), ld.reshape(1) ** 0.5 * 2)[0])


def dp_policy(problem: Problem, test: ProductBatch, objective: str) -> dp.TablePolicy:
    """The DP-optimal policy table for a population of identical products."""
    first = test.select([0])
    same = [np.all(test.true_dist == first.true_dist[0])] + [
        bool(torch.all(getattr(test, k) == getattr(first, k)[0]))
        for k in ("true_mean", "true_shape", "holding_cost", "shortage_cost", "unit_cost", "price", "lead_time")]
    if not all(same):
        raise ValueError("the dp baseline needs identical products (one demand law, one set of costs, "
                         "one lead time); drop it from eval.baselines")
    return dp.optimal_policy(problem, first, objective)


def baseline_policies(problem: Problem, train: ProductBatch, test: ProductBatch, width: int, start: int,
                      horizon: int, warmup: int, objective: str, seed: int,
                      which=("omniscient", "estimated", "best_constant"),
                      sim_periods: int = 4000) -> dict[str, BaseStockPolicy]:
    out = {}
    if "dp" in which:
        out["dp"] = dp_policy(problem, test, objective)
    if "omniscient" in which:
        out["omniscient"] = BaseStockPolicy(problem, omniscient_levels(
            problem, test, width, objective, seed, sim_periods), test.product_id)
    if "estimated" in which:
        out["estimated"] = BaseStockPolicy(problem, empirical_levels(test, start, objective),
                                           test.product_id)
    if "best_constant" in which:
        level = best_constant_level(problem, train, width, start, horizon, warmup, objective)
        out["best_constant"] = BaseStockPolicy(problem, torch.full((test.size,), level), test.product_id)
    return out
