"""The order policy network and the feature map it sees: docs/policy.md (architecture, and the three
details that keep the per-period loop fast).
"""
from __future__ import annotations

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
        n_endo = state_width + 1  # scaled state and inventory position
        self.first_exo = nn.Linear(n_exo, hidden[0])
        self.first_endo = nn.Linear(n_endo, hidden[0], bias=False)
        layers: list[nn.Module] = []
        for a, b in pairwise(hidden):
            layers += [nn.ELU(inplace=True), nn.Linear(a, b)]
        layers += [nn.ELU(inplace=True), nn.Linear(hidden[-1], n_actions)]
        self.head = nn.Sequential(*layers)
        with torch.no_grad():  # start with the order at about one period's mean demand, the rest low
            self.head[-1].bias.fill_(-2.0)
            self.head[-1].bias[0] = 0.5413

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> PolicyContext:
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
        exogenous = torch.cat(parts, dim=2).transpose(0, 1).contiguous()  # [T, B, n_exo]
        # the inventory position (the sum of the scaled state) is an input: its weight joins each state entry's
        endo = self.first_endo.weight[:, :-1] + self.first_endo.weight[:, -1:]
        weight = torch.cat([self.first_exo.weight, endo], dim=1).t().contiguous()
        return PolicyContext(exogenous.unbind(0), weight, self.first_exo.bias, scale)

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


def build_policy(cfg, state_width: int, problem: Problem) -> OrderPolicy:
    """The network of a ``PolicyConfig`` for ``problem``: one output per action, and the
    features of the problem's per-product parameters among its static inputs."""
    return OrderPolicy(state_width, kind=cfg.kind, window=cfg.window, channels=cfg.channels,
                       hidden=tuple(cfg.hidden), dilations=tuple(cfg.dilations), n_actions=len(problem.actions),
                       features=tuple(cfg.features), feature_lookahead=cfg.feature_lookahead,
                       problem=problem)
