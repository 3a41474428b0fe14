"""Classical heuristics for perishable inventory (base-stock, BSP-low-EW) as policy objects, and the
searches that find their parameters on exact long-run average costs. Definitions: docs/problems/perishable.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core import dp
from pipeline.core.batch import ProductBatch
from pipeline.core.demand import trimmed_pmf, true_pmf
from pipeline.core.heuristics.search import local_search
from pipeline.core.problems.perishable import Perishable


def product_pmf(batch: ProductBatch, eps: float = 1e-12) -> Tensor:
    """Each product's true demand pmf [B, D] (float64), cut where every product's remaining
    tail is below ``eps``, each row's tail added to its last value."""
    return trimmed_pmf(true_pmf(batch), eps)


def expected_waste(problem: Perishable, state: Tensor, pmf: Tensor, lead_time: Tensor,
                   issuing: str | Tensor | None = None, life: int | Tensor | None = None) -> Tensor:
    """E[units that expire in periods t .. t + L - 1] if nothing more is ordered, for each
    product's lead time L (and issuing rule, ``Perishable.issue``, and shelf life
    ``life``, ``Perishable.expire``; default the problem's): the waste before an
    order placed now arrives [B]. Exact for
    i.i.d. demand with pmf [B, D]: the last period is an expectation over its demand, every
    earlier one a sum over its demand values."""
    transit = state.shape[1] - problem.shelf_life
    life = problem.shelf_life if life is None else life
    values = torch.arange(pmf.shape[1], dtype=state.dtype, device=state.device)
    pmf = pmf.to(state.dtype)
    horizon = int(lead_time.max())

    def waste_from(period: int, pipeline: Tensor, stock: Tensor) -> Tensor:
        """Expected waste in periods ``period .. L-1`` from this stock [B, m] and what is
        still in transit [B, P'] (arrival order)."""
        B, D = stock.shape[0], len(values)
        rule, own = (x.repeat_interleave(D) if isinstance(x, Tensor) else x for x in (issuing, life))
        left, _ = problem.issue(stock.repeat_interleave(D, dim=0), values.repeat(B), rule)
        left, waste = problem.expire(left, own)
        now = (waste.reshape(B, D) * pmf).sum(dim=1) * (lead_time > period)
        if period + 1 >= horizon:
            return now
        arriving = pipeline[:, 0] if pipeline.shape[1] else torch.zeros_like(now)
        kept = [a.reshape(B, D) for a in left]
        later = torch.zeros_like(now)
        for d in range(D):
            nxt = torch.stack([arriving, *(a[:, d] for a in kept)], dim=1)
            later = later + pmf[:, d] * waste_from(period + 1, pipeline[:, 1:], nxt)
        return now + later

    return waste_from(0, state[:, :transit].flip(1), state[:, transit:])


# ------------------------------------------------------------------------------ policies


def cap(order: Tensor, max_order: int | Tensor) -> Tensor:
    """``order`` within 0..max_order (``max_order`` [B]: each product's own)."""
    return (torch.clamp(order, torch.zeros_like(order), max_order.to(order)) if isinstance(max_order, Tensor)
            else torch.clamp(order, min=0.0, max=float(max_order)))


def base_stock_order(position: Tensor, level: Tensor | float, max_order: int | Tensor) -> Tensor:
    return cap(level - position, max_order)


def bsp_low_ew_order(position: Tensor, waste: Tensor, low_level, level, threshold, max_order: int | Tensor) -> Tensor:
    """BSP-low-EW's order from the inventory position and the expected waste (module doc)."""
    y = position - waste
    alpha = 1.0 - (level - low_level) / threshold
    order = torch.where(y < threshold, low_level - alpha * y, level - y)
    return cap(torch.round(order), max_order)


@dataclass
class PerishableBaseStock:
    """Order up to ``level`` on the inventory position, at most ``problem.max_order``."""

    problem: Perishable
    level: float

    def prepare(self, batch: ProductBatch, start: int, horizon: int):
        return self.problem.param(batch, "max_order")

    def act(self, max_order, t: int, state: Tensor) -> Tensor:
        return base_stock_order(self.problem.inventory_position(state), self.level, max_order)[:, None]


@dataclass
class BspLowEw:
    """BSP-low-EW (module doc): parameters ``low_level`` S1, ``level`` S2, ``threshold`` b."""

    problem: Perishable
    low_level: float
    level: float
    threshold: float

    def __post_init__(self):
        if not self.threshold > 0:
            raise ValueError(f"BSP-low-EW: threshold must be > 0, got {self.threshold}")

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> tuple:
        return (product_pmf(batch).to(batch.demand.device), batch.lead_time,
                *(self.problem.param(batch, k) for k in ("issuing", "shelf_life", "max_order")))

    def act(self, ctx: tuple, t: int, state: Tensor) -> Tensor:
        pmf, lead_time, issuing, life, max_order = ctx
        waste = expected_waste(self.problem, state, pmf, lead_time, issuing, life)
        return bsp_low_ew_order(self.problem.inventory_position(state), waste, self.low_level,
                                self.level, self.threshold, max_order)[:, None]


# ------------------------------------------------------------------------------ searches


@dataclass
class Instance:
    """One product's exact DP: its transition table on ``Perishable.dp_space``, and the
    inventory position and expected waste in every grid state (what the heuristics read)."""

    problem: Perishable
    product: ProductBatch
    trans: dp.Transitions
    position: Tensor  # [S]
    waste: Tensor     # [S]

    @classmethod
    def of(cls, problem: Perishable, product: ProductBatch) -> Instance:
        pmf = product_pmf(product)
        space = problem.dp_space(product, float(product.true_mean[0]), 0.0)
        trans = dp.transitions(problem, product, space, pmf[0])
        states = space.states()
        issuing, life = (problem.param(product, k) for k in ("issuing", "shelf_life"))
        issuing, life = (x.expand(len(states)) if isinstance(x, Tensor) else x for x in (issuing, life))
        waste = expected_waste(problem, states, pmf.expand(len(states), -1), product.lead_time.expand(len(states)),
                               issuing, life)
        return cls(problem, product, trans, states.sum(dim=1), waste)

    def average_cost(self, orders: Tensor) -> float:
        """Exact long-run average cost of an order table [S] (whole units in 0..max_order):
        the stationary law of the chain it induces times the expected period cost."""
        choice = orders.round().long()  # the action set is 0..max_order, action k orders k
        pi = dp.stationary(self.trans, choice)
        return float(pi @ self.trans.cost.gather(1, choice[:, None])[:, 0])


def best_base_stock(inst: Instance) -> tuple[tuple[int], float]:
    """The base-stock level with the lowest exact long-run average cost, by local search from
    L + 1 periods of mean demand."""
    L, mean = int(inst.product.lead_time[0]), float(inst.product.true_mean[0])
    Q, m = (int(inst.problem.param(inst.product, k)) for k in ("max_order", "shelf_life"))  # the product's
    top = Q * (L - 1 + m)
    return local_search(lambda p: inst.average_cost(base_stock_order(inst.position, p[0], Q)),
                        (round(mean * (L + 1)),), lows=(0,), highs=(top,))


def best_bsp_low_ew(inst: Instance, start: tuple[int, int, int] | None = None) -> tuple[tuple[int, int, int], float]:
    """BSP-low-EW parameters (S1, S2, b) with the lowest exact long-run average cost, by local
    search from the best base-stock level (S1 = S2 = S, b = S: order-up-to on IP - EW)."""
    Q, m = (int(inst.problem.param(inst.product, k)) for k in ("max_order", "shelf_life"))
    top = Q * (int(inst.product.lead_time[0]) - 1 + m)
    if start is None:
        (level,), _ = best_base_stock(inst)
        start = (level, level, max(1, level))
    return local_search(lambda p: inst.average_cost(bsp_low_ew_order(inst.position, inst.waste, *p, Q)),
                        start, lows=(0, 0, 1), highs=(top, top, top))
