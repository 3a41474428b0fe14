"""Exact dynamic programming for small instances, i.i.d. demand with a known pmf: the generic ``solve``
and the specialised ``lost_sales_rvi``. How they work: docs/dp.md.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch
from pipeline.core.demand import demand_std, trimmed_pmf, true_pmf
from pipeline.core.problems.base import StateSpace
from pipeline.core.problems.lost_sales import lost_sales_grid
from pipeline.core.rollout import action_matrix, objective_loss
from pipeline.core.protocols import Policy, Problem


@dataclass
class DPSolution:
    average_cost: float
    policy: Tensor        # order quantity for every state, shape [N+1] + [Q+1] * (L-1)
    values: Tensor        # relative values, same shape
    iterations: int
    span: float           # span of the last Bellman difference: the cost is exact to +-span/2
    max_on_hand: int
    max_order: int


def leftover_matrix(pmf: Tensor, n: int) -> Tensor:
    """P[a, m] = P((a - D)^+ = m) for a, m in 0..n."""
    a = torch.arange(n + 1)[:, None]
    m = torch.arange(n + 1)[None, :]
    d = a - m  # demand that leaves m units from a
    inside = (d >= 0) & (d < len(pmf)) & (m >= 1)
    P = torch.where(inside, pmf[d.clamp(0, len(pmf) - 1)], torch.zeros((), dtype=pmf.dtype))
    P[:, 0] = 1.0 - P[:, 1:].sum(dim=1)
    return P


def lost_sales_period_cost(pmf: Tensor, holding: float, shortage: float, on_hand: Tensor) -> Tensor:
    """g(y) = E[h (y - D)^+ + p (D - y)^+] for on-hand y (demand beyond the pmf's support
    counted as lost)."""
    d = torch.arange(len(pmf), dtype=torch.float64)
    y = on_hand.double()[..., None]
    tail = float((1.0 - pmf.sum()).clamp_min(0.0))
    return (holding * (pmf * torch.relu(y - d)).sum(-1) + shortage * (pmf * torch.relu(d - y)).sum(-1)
            + shortage * tail * (len(pmf) - y[..., 0]))


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
    cost = lost_sales_period_cost(pmf, holding, shortage, torch.arange(N + 1))
    P = leftover_matrix(pmf, N)
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


def lost_sales_optimum(pmf: Tensor, holding: float, shortage: float, lead_time: int,
                       mean: float, std: float, unit_cost: float = 0.0) -> DPSolution:
    """The exact optimum on ``lost_sales_grid``; refuses when the order truncation binds."""
    N, Q = lost_sales_grid(mean, std, lead_time)
    solution = lost_sales_rvi(pmf, holding, shortage, lead_time, N, Q, unit_cost=unit_cost)
    if int(solution.policy.max()) >= Q:
        raise ValueError(f"dp: the optimal order reached the truncation {Q}; the instance is too "
                         "large for the exact DP")
    return solution


def base_stock_table(level: float, max_on_hand: int, max_order: int, lead_time: int,
                     cap: float | None = None) -> Tensor:
    """Order up to ``level`` in inventory position (on hand plus pipeline), at most ``cap``
    (capped base-stock)."""
    ip = torch.arange(max_on_hand + 1, dtype=torch.float64).reshape([-1] + [1] * (lead_time - 1))
    for j in range(1, lead_time):
        shape = [1] * lead_time
        shape[j] = -1
        ip = ip + torch.arange(max_order + 1, dtype=torch.float64).reshape(shape)
    q = torch.clamp(level - ip, min=0.0, max=float(max_order if cap is None else min(cap, max_order)))
    return q.long()


# ---------------------------------------------------------------- any problem, by its step


@dataclass
class Transitions:
    space: StateSpace
    pmf: Tensor       # [D]
    next: Tensor      # [S, K, D] flat index of the next state
    cost: Tensor      # [S, K] expected one-period loss
    clamped: Tensor   # [S, K] probability that the next state left the grid


def transitions(problem: Problem, product: ProductBatch, space: StateSpace, pmf: Tensor,
                objective: str = "cost") -> Transitions:
    """Run ``problem.step`` on every (state, action, demand): ``product`` is a batch of one
    product (its economics and lead time), ``pmf`` its demand distribution on 0..D-1."""
    states = space.states()
    S, W = states.shape
    D, K = len(pmf), len(space.actions)
    pmf = pmf.double()
    rep = product.select([0] * (S * D)).to("cpu", torch.float64)
    setup = problem.setup(rep, W)
    demand = torch.arange(D, dtype=torch.float64).repeat(S)          # s-major, d-minor
    big_state = states.repeat_interleave(D, dim=0)
    nxt = torch.empty(S, K, D, dtype=torch.long)
    cost = torch.empty(S, K, dtype=torch.float64)
    clamped = torch.empty(S, K, dtype=torch.float64)
    for k in range(K):
        action = space.actions[k].double().expand(S * D, -1)
        step = problem.step(big_state, action, demand, rep, setup)
        idx, out = space.index(step.next_state)
        loss = objective_loss(step.cost, step.sales, rep.price, objective).reshape(S, D)
        nxt[:, k] = idx.reshape(S, D)
        cost[:, k] = loss @ pmf
        clamped[:, k] = out.reshape(S, D).double() @ pmf
    return Transitions(space, pmf, nxt, cost, clamped)


@dataclass
class Solution:
    """An optimal (or evaluated) stationary policy on a ``StateSpace``."""

    space: StateSpace
    average_cost: float   # long-run average loss per period (discount = 1)
    values: Tensor        # [S] relative values (discount = 1) or discounted values
    choice: Tensor        # [S] index into space.actions
    discount: float
    iterations: int
    span: float           # span of the last Bellman difference
    truncation: float     # stationary probability of a transition clamped to the grid
    at_action_cap: float  # stationary probability of choosing the largest action of some kind

    @property
    def table(self) -> Tensor:
        """The action vector in every state, shaped ``space.shape + [A]``."""
        return self.space.actions[self.choice].reshape(*self.space.shape, -1)


def solve(trans: Transitions, discount: float = 1.0, fixed: Tensor | None = None,
          tol: float = 1e-7, max_iter: int = 100_000, aperiodic: float = 1.0) -> Solution:
    """Relative value iteration (``discount = 1``: long-run average loss) or value iteration
    (``discount < 1``), vectorised over states. With ``fixed`` ([S] action indices) it
    evaluates that policy instead of optimising. ``aperiodic < 1`` mixes each transition
    with staying put (same optimal policies, the average cost scaled back) for chains
    whose value iteration would oscillate."""
    S, K, D = trans.next.shape
    pmf = trans.pmf
    if fixed is not None:  # only the chosen action's transitions matter
        nxt = trans.next.gather(1, fixed[:, None, None].expand(-1, 1, D))  # [S, 1, D]
        cost = trans.cost.gather(1, fixed[:, None])                          # [S, 1]
    else:
        nxt, cost = trans.next, trans.cost
    V = torch.zeros(S, dtype=torch.float64)
    for it in range(1, max_iter + 1):
        Q = cost + discount * (V[nxt] @ pmf)
        if aperiodic < 1:
            Q = aperiodic * Q + (1 - aperiodic) * V[:, None]
        best, choice = Q.min(dim=1)
        diff = best - V
        lo, hi = float(diff.min()), float(diff.max())
        if discount < 1:  # MacQueen's bounds: V* lies within discount/(1-discount) * [lo, hi] of best
            V = best
            done = discount / (1 - discount) * (hi - lo) < tol
            if done:
                V = best + discount / (1 - discount) * (lo + hi) / 2
        else:
            V = best - best[0]
            done = hi - lo < tol
        if done:
            break
    else:
        raise RuntimeError(f"value iteration did not converge in {max_iter} iterations "
                           f"(span {hi - lo:.3g}); try aperiodic=0.9")
    if fixed is not None:
        choice = fixed
    pi = stationary(trans, choice)
    average = float(pi @ trans.cost.gather(1, choice[:, None])[:, 0])
    action_max = trans.space.actions.max(dim=0).values
    at_cap = (trans.space.actions[choice] >= action_max).any(dim=1).double()
    return Solution(trans.space, average, V, choice, discount, it, hi - lo,
                    float(pi @ trans.clamped.gather(1, choice[:, None])[:, 0]), float(pi @ at_cap))


def evaluate_policy(trans: Transitions, policy: Policy, product: ProductBatch, discount: float = 1.0) -> Solution:
    """Exact long-run average (or discounted) loss of a state-feedback heuristic."""
    return solve(trans, discount, fixed=policy_choice(trans.space, policy, product), aperiodic=lazy(discount))


def lazy(discount: float) -> float:
    """The ``aperiodic`` weight to solve with: average-cost chains can be periodic (perishable
    LIFO orders cycle 3, 2, 3, 2), and the lazy chain converges regardless; discounted value
    iteration needs the plain operator for its stopping bounds."""
    return 0.5 if discount == 1.0 else 1.0


def stationary(trans: Transitions, choice: Tensor, tol: float = 1e-12, max_iter: int = 100_000) -> Tensor:
    """Stationary distribution of the chain under a policy, by (lazy) power iteration from
    the uniform distribution: [S]."""
    nxt = trans.next.gather(1, choice[:, None, None].expand(-1, 1, trans.next.shape[2]))[:, 0]  # [S, D]
    return lazy_power_iteration(nxt, trans.pmf[None, :].expand(len(nxt), -1), tol, max_iter)


def lazy_power_iteration(nxt: Tensor, weights: Tensor, tol: float = 1e-12, max_iter: int = 100_000) -> Tensor:
    """Stationary law [S] of the chain that moves from state s to ``nxt[s, j]`` with
    probability ``weights[s, j]``, by lazy power iteration from the uniform law."""
    pi = torch.full((len(nxt),), 1.0 / len(nxt), dtype=torch.float64)
    for _ in range(max_iter):
        moved = torch.zeros_like(pi).index_add_(0, nxt.reshape(-1), (pi[:, None] * weights).reshape(-1))
        moved = 0.5 * pi + 0.5 * moved  # lazy chain: same stationary law, no periodicity
        if float((moved - pi).abs().sum()) < tol:
            return moved
        pi = moved
    return pi


def discounted_occupancy(trans: Transitions, choice: Tensor, initial: Tensor,
                         discount: float, tol: float = 1e-12) -> Tensor:
    """(1 - gamma) * sum_t gamma^t P(state_t = s) from ``initial`` under a policy [S]."""
    nxt = trans.next[torch.arange(len(choice)), choice]  # [S, D]
    weights = trans.pmf[None, :].expand_as(nxt)
    law, total, scale = initial, torch.zeros_like(initial), 1.0 - discount
    while scale > tol:
        total += scale * law
        law = torch.zeros_like(law).index_add_(0, nxt.reshape(-1), (law[:, None] * weights).reshape(-1))
        scale *= discount
    return total


def policy_matrix(trans: Transitions, choice: Tensor) -> Tensor:
    """The dense [S, S] transition matrix of the chain under a policy (small grids: checks
    against linear algebra)."""
    S, D = trans.next.shape[0], len(trans.pmf)
    P = torch.zeros(S, S, dtype=torch.float64)
    nxt = trans.next[torch.arange(S), choice]
    P.index_put_((torch.arange(S).repeat_interleave(D), nxt.reshape(-1)), trans.pmf.repeat(S), accumulate=True)
    return P


def policy_choice(space: StateSpace, policy: Policy, product: ProductBatch) -> Tensor:
    """A state-feedback heuristic as a DP policy: its action in every grid state, rounded
    and clamped to the action set, matched to the nearest feasible action vector [S]."""
    states = space.states()
    rep = product.select([0] * len(states)).to("cpu", torch.float64)
    action = torch.round(action_matrix(policy.act(policy.prepare(rep, 0, 1), 0, states)).double())
    return torch.cdist(action, space.actions.double()).argmin(dim=1)


@dataclass
class TablePolicy:
    """Plays a policy table of a ``StateSpace`` in the simulator (states beyond the grid are
    clamped into it)."""

    space: StateSpace
    table: Tensor  # [S, A] action in every grid state

    @classmethod
    def of(cls, solution: Solution) -> "TablePolicy":
        return cls(solution.space, solution.space.actions[solution.choice])

    def prepare(self, batch, start: int, horizon: int):
        return self.table.to(batch.demand.device, batch.demand.dtype)

    def act(self, table: Tensor, t: int, state: Tensor) -> Tensor:
        index, _ = self.space.index(state[:, : len(self.space.lows)])
        return table[index]


def optimal_policy(problem: Problem, product: ProductBatch, objective: str = "cost", discount: float = 1.0,
                   max_truncation: float = 1e-4) -> TablePolicy:
    """The exact optimal policy of one product's instance (``product``: a batch of one, with
    its true demand law), as a ``TablePolicy``. Lost sales with L >= 1 under the cost
    objective uses the specialised solver; every other case the generic one."""
    pmf = true_pmf(product)[0]
    mean = float(product.true_mean[0])
    std = float(demand_std(product.true_dist, product.true_mean.numpy(), product.true_shape.numpy())[0])
    L = int(product.lead_time[0])
    if problem.name == "lost_sales" and L >= 1 and objective == "cost" and discount == 1.0:
        solution = lost_sales_optimum(pmf, float(product.holding_cost[0]), float(product.shortage_cost[0]),
                                      L, mean, std, unit_cost=float(product.unit_cost[0]))
        N, Q = solution.max_on_hand, solution.max_order
        space = StateSpace((0,) * L, (N,) + (Q,) * (L - 1), torch.arange(Q + 1, dtype=torch.float64)[:, None])
        return TablePolicy(space, solution.policy.reshape(-1, 1).double())
    space = problem.dp_space(product, mean, std)
    solution = solve(transitions(problem, product, space, trimmed_pmf(pmf), objective), discount,
                     aperiodic=lazy(discount))
    check_truncation(solution, max_truncation)
    return TablePolicy.of(solution)


def check_truncation(solution: Solution, max_truncation: float = 1e-4) -> None:
    """Refuse a solution whose grid or action set binds where the policy actually goes."""
    at_cap = 0.0 if solution.space.actions_are_bounded else solution.at_action_cap
    if solution.truncation > max_truncation or at_cap > max_truncation:
        raise ValueError(f"dp: the state grid or the action set is too small for this instance "
                         f"(stationary probability {solution.truncation:.2g} of leaving the grid, "
                         f"{at_cap:.2g} of choosing the largest action)")


@contextmanager
def one_thread():
    """Torch on one thread for a while, then the setting restored: the DP is many small tensor
    operations, and two threads competing with other work on two cores run them up to 40
    times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
