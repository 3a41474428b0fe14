"""The order policy network and the feature map it sees: docs/policy.md (architecture, and the three
details that keep the per-period loop fast).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.batch import ProductBatch
from pipeline.core.causal_conv import CausalConvStack
from pipeline.core.protocols import Problem

MIN_SCALE = 0.1  # units; keeps scaled inputs finite for products that barely sell


def demand_scale(batch: ProductBatch, start: int) -> Tensor:
    """Per-product demand scale: mean demand over the history before ``start``."""
    return batch.demand[:, :start].mean(dim=1).clamp_min(MIN_SCALE)


def running_moments(demand: Tensor, start: int, horizon: int) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of demand over periods [0, t) for each decision period
    t = start .. start + horizon - 1: what a practitioner knows at t. [B, horizon] each."""
    seen = demand[:, :start + horizon - 1]  # the last decision sees periods before start + horizon - 1
    csum = torch.cumsum(seen, dim=1)[:, start - 1:]
    csq = torch.cumsum(seen * seen, dim=1)[:, start - 1:]
    count = torch.arange(start, start + horizon, device=demand.device).to(demand.dtype)
    mean = csum / count
    var = (csq / count - mean * mean).clamp_min(0.0)
    return mean, var.sqrt()


def static_features(batch: ProductBatch, scale: Tensor, problem=None) -> Tensor:
    """Cost shares, the shortage fractile, lead time, and the size of the product: log
    scale and scale^-1/2 (the relative noise of counts at that scale); with ``problem``,
    its ``param_features`` of the product's problem parameters after them."""
    h, p, c, r = batch.holding_cost, batch.shortage_cost, batch.unit_cost, batch.price
    total = (h + p + c + r).clamp_min(1e-9)
    extra = problem.param_features(batch, total) if problem is not None else []
    return torch.stack([h / total, p / total, c / total, r / total,
                        p / (p + h).clamp_min(1e-9),
                        batch.lead_time.to(scale.dtype) / 4.0,
                        torch.log(scale), scale.rsqrt(), *extra], dim=1)


def running_features(mean: Tensor, std: Tensor, scale: Tensor) -> Tensor:
    """[B, T, 3]: running mean and spread relative to the scale, and the relative count
    noise at the running mean."""
    return torch.stack([mean / scale[:, None], std / scale[:, None],
                        mean.clamp_min(MIN_SCALE).rsqrt()], dim=2)


N_STATIC = 8
N_RUNNING = 3
INIT_ORDER = 0.5413  # softplus(0.5413) = 1: one period's mean demand


class DemandEncoder(nn.Module):
    """Dilated causal CNN (kernel 2, ELU) over [B, N] (or [B, N, inputs]) -> [B, N - receptive_field + 1, C]:
    output j sees inputs j .. j + receptive_field - 1, the positions whose whole receptive
    field is in x. The weights are ``nn.Conv1d``'s; the arithmetic is
    ``pipeline.core.causal_conv`` (shifted matrix products, blocked, hand-written backward)."""

    def __init__(self, channels: int, dilations: tuple[int, ...], inputs: int = 1):
        super().__init__()
        self.dilations = tuple(dilations)
        self.convs = nn.ModuleList(
            nn.Conv1d(inputs if i == 0 else channels, channels, kernel_size=2, dilation=d)
            for i, d in enumerate(self.dilations))

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.dilations)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] < self.receptive_field:
            raise ValueError(f"the encoder needs at least {self.receptive_field} periods, got {x.shape[1]}")
        h = (x[:, :, None] if x.ndim == 2 else x).contiguous()
        out = CausalConvStack.apply(h, self.dilations, *(c.weight for c in self.convs), *(c.bias for c in self.convs))
        return out[:, self.receptive_field - 1:]


def lookahead_features(feats: Tensor, start: int, horizon: int, lookahead: int) -> Tensor:
    """[B, horizon, F * lookahead]: at decision t, the features of periods t .. t+lookahead-1
    (zero past the end of the history)."""
    ahead = F.pad(feats[:, start:], (0, 0, 0, max(0, start + horizon + lookahead - 1 - feats.shape[1])))
    windows = ahead.unfold(1, lookahead, 1)[:, :horizon]  # [B, horizon, F, lookahead]
    return windows.flatten(2)


@dataclass
class PolicyContext:
    exogenous: tuple[Tensor, ...]  # T x [B, n_exo]: the exogenous inputs of each decision period
    weight: Tensor                 # [n_exo + W, hidden0]: the first layer's, transposed, the inventory position's folded in
    bias: Tensor                   # [hidden0]
    scale: Tensor                  # [B]


class OrderPolicy(nn.Module):
    def __init__(self, state_width: int, kind: str = "cnn", window: int = 32, channels: int = 16,
                 hidden: tuple[int, ...] = (32, 32), dilations: tuple[int, ...] = (1, 2, 4, 8, 16),
                 n_actions: int = 1, features: tuple[str, ...] = (), feature_lookahead: int = 0,
                 problem=None):
        super().__init__()
        self.problem = problem  # with one: its parameters' features join the static inputs
        self.kind, self.state_width, self.n_actions = kind, state_width, n_actions
        self.features, self.lookahead = tuple(features), feature_lookahead if features else 0
        n_feat = len(self.features)
        self.encoder = DemandEncoder(channels, dilations, 1 + n_feat) if kind == "cnn" else None
        if self.encoder is not None and self.encoder.receptive_field != window:
            raise ValueError(f"dilations {dilations} see {self.encoder.receptive_field} periods, "
                             f"not policy.window={window}")
        self.window = window if kind == "cnn" else 0
        n_exo = N_STATIC + getattr(problem, "n_param_features", 0) + N_RUNNING + (channels if kind == "cnn" else 0) + n_feat * self.lookahead
        self.first_exo = nn.Linear(n_exo, hidden[0])
        if self.reads_state:  # the scaled state and the inventory position
            self.first_endo = nn.Linear(state_width + 1, hidden[0], bias=False)
        layers: list[nn.Module] = []
        for a, b in pairwise(hidden):
            layers += [nn.ELU(inplace=True), nn.Linear(a, b)]
        layers += [nn.ELU(inplace=True), nn.Linear(hidden[-1], self.n_outputs())]
        self.head = nn.Sequential(*layers)
        with torch.no_grad():
            self.init_output(self.head[-1].bias)

    reads_state = True  # the hidden layers see the state (a StructuredPolicy's do not)

    def n_outputs(self) -> int:
        return self.n_actions

    def init_output(self, bias: Tensor) -> None:
        """Start with the order at about one period's mean demand, the other actions low."""
        bias.fill_(-2.0)
        bias[0] = INIT_ORDER

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> PolicyContext:
        exogenous, scale = self.exogenous_inputs(batch, start, horizon)
        # the inventory position (the sum of the scaled state) is an input: its weight joins each state entry's
        endo = self.first_endo.weight[:, :-1] + self.first_endo.weight[:, -1:]
        weight = torch.cat([self.first_exo.weight, endo], dim=1).t().contiguous()
        return PolicyContext(exogenous.unbind(0), weight, self.first_exo.bias, scale)

    def exogenous_inputs(self, batch: ProductBatch, start: int, horizon: int) -> tuple[Tensor, Tensor]:
        """([T, B, n_exo] the inputs of each decision period that do not depend on the state,
        [B] the demand scale)."""
        if start < max(self.window, 1):
            raise ValueError(f"a rollout starting at period {start} has too little history for "
                             f"the policy's {self.window}-period window")
        scale = demand_scale(batch, start)
        mean, std = running_moments(batch.demand, start, horizon)
        parts = [static_features(batch, scale, self.problem)[:, None, :].expand(-1, horizon, -1),
                 running_features(mean, std, scale)]
        feats = batch.feature(self.features) if self.features else None
        if self.encoder is not None:
            x = batch.demand[:, start - self.window:start + horizon - 1] / scale[:, None]
            if feats is not None:  # the past features beside the past demand they went with
                x = torch.cat([x[:, :, None], feats[:, start - self.window:start + horizon - 1]], dim=2)
            parts.append(self.encoder(x))  # decision t sees D_{t-32..t-1}
        if self.lookahead:  # known in advance: the features of periods t .. t + lookahead - 1
            parts.append(lookahead_features(feats, start, horizon, self.lookahead))
        return torch.cat(parts, dim=2).transpose(0, 1).contiguous(), scale  # [T, B, n_exo]

    def act(self, ctx: PolicyContext, t: int, state: Tensor) -> Tensor:
        return self.period(ctx.exogenous[t], state, ctx.weight, ctx.bias, ctx.scale)

    def period(self, exogenous: Tensor, state: Tensor, weight: Tensor, bias: Tensor, scale: Tensor) -> Tensor:
        """The actions [B, A] from one period's exogenous inputs [B, n_exo] and the state [B, W]
        (``weight`` and ``bias`` of the joined first layer, ``scale`` [B]). Tensors only, so
        that ``policy.period = torch.compile(policy.period)`` can compile it (optional:
        ``benchmarks/step_speed.py compile=true``; a compiled period has no double backward,
        which the structure penalty needs)."""
        x = torch.cat([exogenous, state / scale[:, None]], dim=1)
        z = self.head(torch.addmm(bias, x, weight))  # first_exo + first_endo, one matmul
        return F.softplus(z) * scale[:, None]  # [B, A]


@dataclass(frozen=True)
class ActionStructure:
    """How one action of a ``StructuredPolicy`` reads the state (docs/policy.md, Structure by
    construction): the constrained entries with the sign of the action's slope in each, the
    down-sets of the required weight orderings (``down[i, j]``: the weight of entry j may not
    exceed entry i's; the diagonal set), the largest slope size allowed (inf: unbounded), and
    the entries no property speaks of."""
    constrained: tuple[int, ...]
    signs: tuple[float, ...]
    down: tuple[tuple[float, ...], ...]
    bound: float
    free: tuple[int, ...]


def action_structure(properties, state_names: list[str], action: str) -> ActionStructure:
    """The ``ActionStructure`` that guarantees ``properties`` (``pipeline.core.properties``) for
    ``action``: every bound must fix the slope's sign (``lo >= 0`` or ``hi <= 0``); an
    ordering between two entries of the same sign becomes an ordering of their weights, one
    from a non-increasing to a non-decreasing entry holds by the signs."""
    lo, hi = {}, {}
    for p in properties:
        if p.action == action and p.other is None:
            i = state_names.index(p.coord)
            lo[i], hi[i] = max(lo.get(i, -math.inf), p.lo), min(hi.get(i, math.inf), p.hi)
    sign, size = {}, {}
    for i in lo:
        if hi[i] <= 0 and lo[i] < 0:
            sign[i], size[i] = -1.0, -lo[i]
        elif lo[i] >= 0 and hi[i] > 0:
            sign[i], size[i] = 1.0, hi[i]
        else:
            raise ValueError(f"d{action}/d{state_names[i]} in [{lo[i]:g}, {hi[i]:g}]: a structured policy needs "
                             "each bound to fix the slope's sign (lo >= 0 or hi <= 0, not both 0)")
    constrained = sorted(sign)
    pos = {i: k for k, i in enumerate(constrained)}
    down = torch.eye(len(constrained))
    for p in properties:
        if p.action != action or p.other is None:
            continue
        i, j = state_names.index(p.coord), state_names.index(p.other)  # d/dx_i <= d/dx_j
        if i not in sign or j not in sign:
            raise ValueError(f"{p}: a structured policy orders slopes only of entries with a sign bound")
        if sign[i] < 0 and sign[j] < 0:    # -w_i <= -w_j: w_j <= w_i
            down[pos[i], pos[j]] = 1.0
        elif sign[i] > 0 and sign[j] > 0:  # w_i <= w_j
            down[pos[j], pos[i]] = 1.0
        elif sign[i] > 0:
            raise ValueError(f"{p}: a non-decreasing slope cannot be at most a non-increasing one")
    for k in range(len(constrained)):  # transitive closure: down-sets of down-sets
        down = torch.maximum(down, down[:, k:k + 1] * down[k:k + 1, :])
    return ActionStructure(tuple(constrained), tuple(sign[i] for i in constrained),
                           tuple(map(tuple, down.tolist())), min(size.values(), default=math.inf),
                           tuple(i for i in range(len(state_names)) if i not in sign))


@dataclass
class StructuredContext:
    level: tuple[Tensor, ...]   # T x [B, A, K]: each term's level S
    weight: tuple[Tensor, ...]  # T x [B, A, K, W]: each term's signed weight on each scaled state entry
    sharp: tuple[Tensor, ...]   # T x [B, A, K]: each term's sharpness beta
    share: tuple[Tensor, ...]   # T x [B, A, K]: each term's share alpha (sums to 1 over K)
    scale: Tensor               # [B]


class StructuredPolicy(OrderPolicy):
    """An order policy whose slopes in the state obey the problem's structural properties by
    its form (docs/policy.md, Structure by construction). Action a is a mixture of K smoothed
    base-stock terms,

        a = scale * sum_k alpha_k softplus(beta_k z_k) / beta_k,
        z_k = S_k + sum_i sign_i w_ki x_i / scale + sum_free v_ki x_i / scale,

    where S, beta > 0, alpha (a softmax over k), w and v come from the exogenous inputs
    (the same features and demand encoder as ``OrderPolicy``) and never from the state. So
    d a / d x_i = sign_i sum_k alpha_k sigmoid(beta_k z_k) w_ki: its sign is sign_i, its size at
    most max_k w_ki, and orderings of the w carry over to the slopes. The w of a term are sums
    over down-sets of non-negative increments (``ActionStructure.down``), which orders them;
    with a bound the increments are a softmax with a slack entry, times the bound."""

    reads_state = False

    def __init__(self, state_width: int, structures: list[ActionStructure], terms: int = 4, **kwargs):
        self.structures, self.terms = list(structures), terms
        super().__init__(state_width, n_actions=len(structures), **kwargs)
        for a, st in enumerate(self.structures):
            self.register_buffer(f"down_{a}", torch.tensor(st.down).reshape(len(st.constrained), len(st.constrained)))

    def _sizes(self, st: ActionStructure) -> tuple[int, int, int]:
        """Outputs per term of an action: level, sharpness and share; increments (and a slack
        with a bound); free weights."""
        n = len(st.constrained)
        return 3, n + (1 if math.isfinite(st.bound) and n else 0), len(st.free)

    def n_outputs(self) -> int:
        return self.terms * sum(sum(self._sizes(st)) for st in self.structures)

    def init_output(self, bias: Tensor) -> None:
        """The first action's level at about one period's mean demand at an empty state, the
        other actions' low; equal increments and shares."""
        bias.zero_()
        at = 0
        for a, st in enumerate(self.structures):
            per_term = sum(self._sizes(st))
            bias[at:at + self.terms * per_term:per_term] = INIT_ORDER if a == 0 else -2.0
            at += self.terms * per_term

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> StructuredContext:
        exogenous, scale = self.exogenous_inputs(batch, start, horizon)
        out = self.head(self.first_exo(exogenous))  # [T, B, outputs]: the whole rollout's at once
        T, B, _ = out.shape
        levels, weights, sharps, shares, at = [], [], [], [], 0
        for a, st in enumerate(self.structures):
            fixed, n_inc, n_free = self._sizes(st)
            per_term = fixed + n_inc + n_free
            o = out[..., at:at + self.terms * per_term].reshape(T, B, self.terms, per_term)
            at += self.terms * per_term
            levels.append(o[..., 0])
            sharps.append(0.5 + F.softplus(o[..., 1]))
            shares.append(torch.softmax(o[..., 2], dim=-1))
            w = o.new_zeros(T, B, self.terms, self.state_width)
            if st.constrained:
                inc = o[..., fixed:fixed + n_inc]
                inc = torch.softmax(inc, dim=-1)[..., :-1] * st.bound if math.isfinite(st.bound) else F.softplus(inc)
                signs = torch.tensor(st.signs, dtype=o.dtype, device=o.device)
                w[..., list(st.constrained)] = signs * (inc @ getattr(self, f"down_{a}").to(o.dtype).t())
            if st.free:
                w[..., list(st.free)] = o[..., fixed + n_inc:]
            weights.append(w)
        stack = lambda parts: torch.stack(parts, dim=2).unbind(0)  # noqa: E731  [T] x [B, A, ...]
        return StructuredContext(stack(levels), stack(weights), stack(sharps), stack(shares), scale)

    def act(self, ctx: StructuredContext, t: int, state: Tensor) -> Tensor:
        x = state / ctx.scale[:, None]
        z = ctx.level[t] + (ctx.weight[t] * x[:, None, None, :]).sum(dim=-1)  # [B, A, K]
        beta = ctx.sharp[t]
        return (ctx.share[t] * F.softplus(beta * z) / beta).sum(dim=-1) * ctx.scale[:, None]  # [B, A]


STRUCTURES = ("free", "by_construction")


def build_policy(cfg, state_width: int, problem: Problem) -> OrderPolicy:
    """The network of a ``PolicyConfig`` for ``problem``: one output per action, and the
    features of the problem's per-product parameters among its static inputs. With
    ``structure=by_construction`` a ``StructuredPolicy`` that obeys the problem's default
    properties (docs/structure.md) by its form."""
    kwargs = dict(kind=cfg.kind, window=cfg.window, channels=cfg.channels, hidden=tuple(cfg.hidden),
                  dilations=tuple(cfg.dilations), features=tuple(cfg.features),
                  feature_lookahead=cfg.feature_lookahead, problem=problem)
    structure = cfg.structure
    if structure == "free":
        return OrderPolicy(state_width, n_actions=len(problem.actions), **kwargs)
    if structure == "by_construction":
        names, props = problem.state_names(state_width), problem.default_properties(state_width)
        return StructuredPolicy(state_width, [action_structure(props, names, a) for a in problem.actions],
                                terms=cfg.terms, **kwargs)
    raise ValueError(f"policy.structure={structure!r}; use one of {', '.join(STRUCTURES)}")
