"""Classical heuristics for lost sales with lead time L >= 1 as policy objects, their exact long-run
average cost on the DP grid (``policy_average_cost``) and the searches for their parameters (``best_*``).
Definitions, conventions and the evaluation: docs/problems/lost_sales.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.demand import demand_std, true_pmf
from pipeline.core.dp import lazy_power_iteration, leftover_matrix, lost_sales_period_cost
from pipeline.core.problems.lost_sales import lost_sales_grid
from pipeline.core.heuristics.search import local_search
from pipeline.core.protocols import Policy


@dataclass
class Instance:
    """One product's lost-sales economics and the DP grid its policies are evaluated on:
    on hand 0..max_on_hand (stock above is treated as max_on_hand, as in
    ``dp.lost_sales_rvi``), pipeline entries and orders 0..max_order."""

    product: ProductBatch   # a batch of one product (its true demand law and costs)
    pmf: Tensor             # demand pmf on 0..len-1, float64
    holding: float
    shortage: float
    lead_time: int
    max_on_hand: int
    max_order: int

    @classmethod
    def of(cls, product: ProductBatch) -> Instance:
        L = int(product.lead_time[0])
        if L < 1:
            raise ValueError(f"lead_time must be >= 1 for the lost-sales heuristics, got {L} "
                             "(lead time 0 is the newsvendor)")
        if float(product.unit_cost[0]) != 0.0:
            raise ValueError(f"unit_cost must be 0 for the lost-sales heuristics, got {float(product.unit_cost[0])}")
        mean = float(product.true_mean[0])
        std = float(demand_std(product.true_dist, product.true_mean.numpy(), product.true_shape.numpy())[0])
        N, Q = lost_sales_grid(mean, std, L)
        return cls(product, true_pmf(product)[0].double(), float(product.holding_cost[0]),
                   float(product.shortage_cost[0]), L, N, Q)

    @property
    def shape(self) -> list[int]:
        return [self.max_on_hand + 1] + [self.max_order + 1] * (self.lead_time - 1)

    @property
    def fractile(self) -> float:
        return self.shortage / (self.shortage + self.holding)

    def states(self, max_pipeline: int | None = None) -> Tensor:
        """The grid states [S, L] (float64, row-major), pipeline entries up to
        ``max_pipeline`` (default: max_order, the whole grid)."""
        top = self.max_order if max_pipeline is None else max_pipeline
        axes = [torch.arange(self.max_on_hand + 1)] + [torch.arange(top + 1)] * (self.lead_time - 1)
        return torch.cartesian_prod(*axes).reshape(-1, self.lead_time).double()

    def orders(self, policy: Policy, states: Tensor) -> Tensor:
        """A policy object's orders in these states [S], rounded and clamped to 0..max_order."""
        batch = self.product.select(torch.zeros(len(states), dtype=torch.long))
        order = policy.act(policy.prepare(batch, 0, 1), 0, states).reshape(-1)
        return torch.round(order.double()).clamp(0, self.max_order).long()


def period_cost(inst: Instance, on_hand: Tensor) -> Tensor:
    """g(y) = E[h (y - D)^+ + p (D - y)^+] for on-hand y (demand beyond the pmf's support
    counted as lost, as in ``dp.lost_sales_rvi``)."""
    return lost_sales_period_cost(inst.pmf, inst.holding, inst.shortage, on_hand)


# ------------------------------------------------------------------------------ policies


@dataclass
class CappedBaseStockPolicy:
    """Xin (2021): order min((S - inventory position)^+, r); ``cap = inf`` is base-stock."""

    level: float
    cap: float = math.inf

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> None:
        return None

    def act(self, ctx, t: int, state: Tensor) -> Tensor:
        position = state.sum(dim=1)  # LostSales.inventory_position
        return torch.clamp(self.level - position, min=0.0).clamp(max=self.cap)[:, None]


@dataclass
class VectorBaseStockPolicy:
    """Zipkin (2008) eq. (5): order [min_{l=0..L} (s_l - v_l)]^+ with v_l the stock due from
    period l on (v_0 the inventory position, v_L = 0); ``levels = (s_0, ..., s_L)``."""

    levels: tuple[int, ...]

    @property
    def lead_time(self) -> int:
        return len(self.levels) - 1

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Tensor:
        _check_lead_time(batch, self.lead_time, "vector base-stock")
        return torch.tensor(self.levels, dtype=batch.demand.dtype, device=batch.demand.device)

    def act(self, levels: Tensor, t: int, state: Tensor) -> Tensor:
        L = self.lead_time
        due = torch.flip(torch.cumsum(torch.flip(state[:, :L], [1]), 1), [1])  # v_0 .. v_{L-1}
        due = torch.cat([due, torch.zeros_like(due[:, :1])], dim=1)            # v_L = 0
        return torch.relu((levels[None, :] - due).min(dim=1).values)[:, None]


@dataclass
class OrderTablePolicy:
    """A heuristic given by its order in every state of a lost-sales grid (the myopic
    policies); states beyond the grid are clamped into it."""

    table: Tensor   # [N+1] + [Q+1] * (L-1) orders
    name: str = "order table"

    @property
    def lead_time(self) -> int:
        return self.table.ndim

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Tensor:
        _check_lead_time(batch, self.lead_time, self.name)
        return self.table.to(batch.demand.device, batch.demand.dtype)

    def act(self, table: Tensor, t: int, state: Tensor) -> Tensor:
        index = state[:, : self.lead_time].round().long()
        highs = torch.tensor(table.shape, device=index.device) - 1
        index = torch.minimum(index.clamp_min(0), highs)
        return table[tuple(index.T)][:, None]


def _check_lead_time(batch: ProductBatch, lead_time: int, name: str) -> None:
    if bool((batch.lead_time != lead_time).any()):
        raise ValueError(f"{name}: this policy serves lead time {lead_time}; the batch has lead times "
                         f"{sorted(set(batch.lead_time.tolist()))}")


def standard_vector_levels(inst: Instance) -> tuple[int, ...]:
    """Morton's levels (s_0, ..., s_L): s_l is the p/(p+h) quantile of the demand over
    L - l + 1 periods."""
    L, total, quantiles = inst.lead_time, torch.ones(1, dtype=torch.float64), []
    for _ in range(L + 1):  # total: the pmf of the demand over 1, 2, ..., L+1 periods
        total = torch.nn.functional.conv1d(total[None, None], inst.pmf.flip(0)[None, None],
                                           padding=len(inst.pmf) - 1)[0, 0]
        quantiles.append(int((torch.cumsum(total, 0) < inst.fractile - 1e-12).sum()))
    return tuple(reversed(quantiles))  # s_l uses L - l + 1 periods


def arrival_costs(inst: Instance) -> Tensor:
    """C(x, z): the expected cost of period t + L given the state x and the order z and no
    other order, for on hand 0..N+Q, pipeline entries and z in 0..Q:
    shape [N+Q+1] + [Q+1] * (L-1) + [Q+1].

    ``E G(J(x))`` is computed backwards over the pipeline, as in the DP:
    ``T_L(a) = sum_m P[a, m] G(m)``, ``T_k(a, x_k, ...) = sum_m P[a, m] T_{k+1}(m + x_k, ...)``,
    ``C(x, .) = T_1(x_0, x_1, ...)``, with on hand a up to N + L*Q so nothing is truncated."""
    N, Q, L = inst.max_on_hand, inst.max_order, inst.lead_time
    top = N + L * Q
    P = leftover_matrix(inst.pmf, top)
    shift = torch.clamp(torch.arange(top + 1)[:, None] + torch.arange(Q + 1)[None, :], max=top)
    g = period_cost(inst, torch.arange(top + Q + 1))
    out = []
    for z in range(Q + 1):
        T = P @ g[z: z + top + 1]                                      # T_L(a)
        for _ in range(L - 1):                                         # prepend x_k, k = L-1..1
            T = torch.einsum("am,mbr->abr", P, T.reshape(top + 1, -1)[shift]).reshape(top + 1, -1)
        out.append(T[: N + Q + 1])
    return torch.stack(out, dim=-1).reshape([N + Q + 1] + [Q + 1] * (L - 1) + [Q + 1])


def _smallest_argmin(values: Tensor) -> Tensor:
    """Index of the smallest minimiser along the last axis (ties within 1e-12)."""
    best = values.min(dim=-1, keepdim=True).values
    return (values <= best + 1e-12).double().argmax(dim=-1)


def myopic_table(inst: Instance, periods: int, costs: Tensor | None = None) -> Tensor:
    """The myopic-1 (``periods = 1``) or myopic-2 (``periods = 2``) order in every state of
    the grid, shape [N+1] + [Q+1] * (L-1). ``costs``: ``arrival_costs(inst)`` if known."""
    if periods not in (1, 2):
        raise ValueError(f"periods must be 1 or 2 (myopic-1, myopic-2), got {periods}")
    N, Q = inst.max_on_hand, inst.max_order
    C = arrival_costs(inst) if costs is None else costs
    if periods == 1:
        return _smallest_argmin(C[: N + 1])
    best_next = C.min(dim=-1).values                                   # min_z' C(x', z'), on hand 0..N+Q
    P = leftover_matrix(inst.pmf, N)
    shift = torch.arange(N + 1)[:, None] + torch.arange(Q + 1)[None, :]  # m + x_1 (m + z when L = 1)
    ahead = torch.einsum("am,mbr->abr", P, best_next.reshape(N + Q + 1, -1)[shift])
    return _smallest_argmin(C[: N + 1] + ahead.reshape(C[: N + 1].shape))


def myopic_policy(inst: Instance, periods: int) -> OrderTablePolicy:
    """Myopic-1 or myopic-2 as a policy object for the simulator."""
    return OrderTablePolicy(myopic_table(inst, periods), f"myopic-{periods}")


# ---------------------------------------------------------------------- exact evaluation


def order_table(inst: Instance, policy: Policy) -> Tensor:
    """A policy object's order in every state of the grid, rounded and clamped to 0..Q:
    the table ``dp.lost_sales_rvi(..., fixed=)`` and ``policy_average_cost`` take (what
    ``dp.policy_choice`` gives on the lost-sales grid)."""
    return inst.orders(policy, inst.states()).reshape(inst.shape)


@dataclass
class PolicyChain:
    """The Markov chain of a stationary policy on a set of grid states that is closed under
    it, and so holds its recurrent states: pipeline entries at most K, the largest order the
    policy places in such states, and inventory position at most U, the smallest level that
    no order from such a state exceeds (U = S for base-stock). Only the chosen order's
    transitions are kept. States are numbered in grid order."""

    inside: Tensor   # [(N+1) (K+1)^(L-1)] bool: the closed set, in the grid with pipeline entries <= K
    on_hand: Tensor  # [n] on hand of each state of the set
    next: Tensor     # [n, M] the state of the set reached when m = 0..M-1 units are left over
    weight: Tensor   # [n, M] the probability of that leftover

    @classmethod
    def of_table(cls, inst: Instance, table: Tensor) -> PolicyChain:
        K = int(table.max())
        sub = table[(slice(None),) + (slice(0, K + 1),) * (inst.lead_time - 1)]
        return cls.of(inst, inst.states(K), sub.reshape(-1).long(), K)

    @classmethod
    def of_policy(cls, inst: Instance, policy: Policy) -> PolicyChain:
        """Evaluates the policy only where needed: K is found by growing the pipeline bound
        from the order placed with nothing in stock until no order exceeds it."""
        K = int(inst.orders(policy, inst.states(0)[:1]))
        while True:
            states = inst.states(K)
            order = inst.orders(policy, states)
            if int(order.max()) <= K:
                return cls.of(inst, states, order, K)
            K = int(order.max())

    @classmethod
    def of(cls, inst: Instance, states: Tensor, order: Tensor, K: int) -> PolicyChain:
        """``states``: the grid states with pipeline entries <= K, row-major; ``order`` [S]:
        the policy's order in each, all <= K."""
        N, L = inst.max_on_hand, inst.lead_time
        states = states.long()
        position = states.sum(dim=1)
        top = int(order[0])
        while True:  # the smallest U with position + order <= U wherever position <= U
            reached = int((position + order)[position <= top].max())
            if reached == top:
                break
            top = reached
        inside = position <= top
        number = torch.full((len(states),), -1, dtype=torch.long)
        number[inside] = torch.arange(int(inside.sum()))
        x, q = states[inside], order[inside]
        m = torch.arange(min(N, top) + 1)                               # units left of x0
        if L == 1:    # next on hand (x0 - D)^+ + z
            nxt = torch.clamp(m[None, :] + q[:, None], max=N)
        else:         # next state ((x0 - D)^+ + x1, x2, ..., x_{L-1}, z), row-major index
            after = torch.zeros_like(q)
            for j in range(2, L):
                after = after * (K + 1) + x[:, j]
            after = after * (K + 1) + q
            nxt = torch.clamp(m[None, :] + x[:, 1:2], max=N) * (K + 1) ** (L - 1) + after[:, None]
        weight = leftover_matrix(inst.pmf, N)[x[:, 0]][:, : len(m)]   # P(m units left | x0)
        nxt = number[nxt]
        if bool(((nxt < 0) & (weight > 0)).any()):
            raise RuntimeError("PolicyChain: the state set is not closed under the policy")
        return cls(inside, x[:, 0], nxt.clamp_min(0), weight)

    def average_cost(self, inst: Instance, tol: float = 1e-7, max_iter: int = 10_000) -> float:
        """Long-run average cost by relative value iteration on the lazy chain that stays put
        with probability 0.1 (same stationary law and average cost; no periodic oscillation:
        a vector base-stock policy can alternate its orders deterministically). Stops when the
        span of the Bellman difference is below ``tol`` (the cost is exact to tol/2)."""
        cost = period_cost(inst, self.on_hand)
        V = torch.zeros(len(cost), dtype=torch.float64)
        flat = self.next.reshape(-1)
        for _ in range(max_iter):
            TV = cost + 0.9 * (V.index_select(0, flat).view(self.next.shape) * self.weight).sum(dim=1) + 0.1 * V
            lo, hi = (float(v) for v in torch.aminmax(TV - V))
            V = TV - TV[0]
            if hi - lo < tol:
                return (lo + hi) / 2
        raise RuntimeError(f"policy evaluation did not converge in {max_iter} iterations: the cost lies in "
                           f"[{lo:.6g}, {hi:.6g}] (a nearly decomposable chain)")


def policy_average_cost(inst: Instance, table: Tensor, tol: float = 1e-7) -> float:
    """Exact long-run average cost of the stationary policy ``table`` (orders 0..Q in every
    grid state): the number ``dp.lost_sales_rvi(..., fixed=table)`` gives, faster (on its
    ``PolicyChain``)."""
    return PolicyChain.of_table(inst, table).average_cost(inst, tol)


def policy_cost(inst: Instance, policy: Policy, tol: float = 1e-7) -> float:
    """Exact long-run average cost of a policy object on the instance's grid (its orders
    rounded and clamped to 0..Q), computed only where its chain goes."""
    return PolicyChain.of_policy(inst, policy).average_cost(inst, tol)


def stationary_distribution(inst: Instance, table: Tensor, tol: float = 1e-12, max_iter: int = 100_000) -> Tensor:
    """Long-run probability of every grid state under the policy ``table`` (shape
    ``inst.shape``; zero outside its ``PolicyChain``), by lazy power iteration from the
    uniform law on the chain's states, as ``dp.stationary``."""
    chain = PolicyChain.of_table(inst, table)
    K, L = int(table.max()), inst.lead_time
    law = torch.zeros(chain.inside.shape, dtype=torch.float64)
    law[chain.inside] = lazy_power_iteration(chain.next, chain.weight, tol, max_iter)
    out = torch.zeros(inst.shape, dtype=torch.float64)
    out[(slice(None),) + (slice(0, K + 1),) * (L - 1)] = law.reshape([inst.max_on_hand + 1] + [K + 1] * (L - 1))
    return out


# ------------------------------------------------------------------ parameter searches


def best_base_stock(inst: Instance) -> tuple[tuple[int], float]:
    """The best constant base-stock level S, from the (L+1)-period newsvendor level."""
    start = standard_vector_levels(inst)[0]
    return local_search(lambda s: policy_cost(inst, CappedBaseStockPolicy(s[0])), (start,),
                        highs=(inst.max_on_hand,))


def best_capped_base_stock(inst: Instance, start: tuple[int, int] | None = None) -> tuple[tuple[int, int], float]:
    """The best (S, r) of capped base-stock, by local search from (S, r) = (Morton's s_0,
    Morton's s_L) unless ``start`` is given."""
    levels = standard_vector_levels(inst)
    start = start or (levels[0], levels[-1])
    return local_search(lambda s: policy_cost(inst, CappedBaseStockPolicy(*s)), start,
                        highs=(inst.max_on_hand, inst.max_order))


def best_vector_base_stock(inst: Instance) -> tuple[tuple[int, ...], float]:
    """The best levels (s_0, ..., s_L) of vector base-stock, by local search from Morton's
    standard levels. A middle level s_1..s_{L-1} that never binds leaves the cost flat, and
    a local search stops on such a plateau; ties are broken towards lower middle levels
    (1e-9 per unit) so that the search walks to the plateau's edge, where a binding level
    may lower the cost."""
    def cost(levels: tuple[int, ...]) -> float:
        return policy_cost(inst, VectorBaseStockPolicy(levels)) + 1e-9 * sum(levels[1:-1])

    highs = (inst.max_on_hand,) * inst.lead_time + (inst.max_order,)
    levels, value = local_search(cost, standard_vector_levels(inst), highs=highs)
    return levels, value - 1e-9 * sum(levels[1:-1])
