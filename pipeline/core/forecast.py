"""Predict, then optimise: a multi-horizon quantile forecaster (MQ-CNN family) and the order-up-to
policies built on it. Model, scaling, loss and features: docs/forecast.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.baselines import critical_fractile, order_up_to
from pipeline.core.batch import ProductBatch
from pipeline.core.protocols import Problem

MIN_SCALE = 0.1  # units; as pipeline.core.policy: keeps scaled inputs finite for products that barely sell


# ---------------------------------------------------------------- pieces

def pinball_loss(y: Tensor, pred: Tensor, quantiles: Tensor) -> Tensor:
    """Elementwise pinball loss ``max(q (y - pred), (q - 1)(y - pred))``; ``pred`` has the
    levels on its last axis, ``y`` broadcasts against ``pred[..., 0]``."""
    diff = y[..., None] - pred
    return torch.maximum(quantiles * diff, (quantiles - 1.0) * diff)


def batch_features(batch: ProductBatch) -> Tensor:
    """``batch.features`` [B, N, F], or an empty [B, N, 0] when the batch has none."""
    feats = getattr(batch, "features", None)
    if feats is None:
        return batch.demand.new_zeros(batch.size, batch.periods, 0)
    return feats.to(batch.demand.device, batch.demand.dtype)


def expanding_scale(demand: Tensor) -> Tensor:
    """Mean demand over periods [0, t) for t = 0..N (at least ``MIN_SCALE``) [B, N + 1]."""
    csum = F.pad(torch.cumsum(demand, dim=1), (1, 0))
    count = torch.arange(demand.shape[1] + 1, device=demand.device, dtype=demand.dtype).clamp_min(1)
    return (csum / count).clamp_min(MIN_SCALE)


def cumulative_targets(demand: Tensor, t0: int, t1: int, horizons: int) -> Tensor:
    """Demand summed over periods t .. t + k - 1 for t in [t0, t1), k = 1..K [B, T, K]."""
    csum = F.pad(torch.cumsum(demand, dim=1), (1, 0))
    t = torch.arange(t0, t1, device=demand.device)
    k = torch.arange(1, horizons + 1, device=demand.device)
    return csum[:, t[:, None] + k[None, :]] - csum[:, t][:, :, None]


def quantile_at(values: Tensor, levels: Sequence[float], u: Tensor, interpolate: bool = True) -> Tensor:
    """The quantile at level ``u`` [B] from quantiles ``values`` [B, ..., Q] at ``levels``
    (sorted): linear interpolation between neighbouring levels or, with
    ``interpolate=False``, ``u`` must be one of them. Returns [B, ...]."""
    lv = torch.as_tensor(list(levels), dtype=torch.float64)
    u = u.double().cpu()
    if not interpolate:
        hit = (u[:, None] - lv[None, :]).abs() < 1e-6
        if not bool(hit.any(1).all()):
            missing = sorted({round(float(x), 6) for x in u[~hit.any(1)]})
            raise ValueError(f"critical fractiles {missing[:5]} are not among the forecast's quantile "
                             f"levels {list(levels)}; add them or interpolate")
        lo = hi = hit.double().argmax(1)
        w = torch.zeros_like(u)
    else:
        if bool((u < lv[0] - 1e-6).any() | (u > lv[-1] + 1e-6).any()):
            raise ValueError(f"critical fractiles in [{float(u.min()):.4g}, {float(u.max()):.4g}] fall "
                             f"outside the forecast's quantile levels [{lv[0]:.4g}, {lv[-1]:.4g}]; "
                             f"add levels that cover them")
        hi = torch.searchsorted(lv, u.clamp(lv[0], lv[-1])).clamp(1, len(lv) - 1) if len(lv) > 1 \
            else torch.zeros_like(u, dtype=torch.long)
        lo = (hi - 1).clamp_min(0)
        gap = (lv[hi] - lv[lo]).clamp_min(1e-12)
        w = ((u - lv[lo]) / gap).clamp(0.0, 1.0)
    shape = (values.shape[0],) + (1,) * (values.ndim - 2) + (1,)
    dev = values.device
    lo_v = values.gather(-1, lo.to(dev).view(shape).expand(*values.shape[:-1], 1))[..., 0]
    hi_v = values.gather(-1, hi.to(dev).view(shape).expand(*values.shape[:-1], 1))[..., 0]
    w = w.to(dev, values.dtype).view(shape[:-1])
    return lo_v + w * (hi_v - lo_v)


class CausalEncoder(nn.Module):
    """Dilated causal CNN (kernel 2) over [B, N, C_in]: output at position i depends on
    inputs up to i. Layer j: relu(W_now h_i + W_past h_{i - d_j} + b), the past zero before
    period 0 (two linear maps run faster on CPU than ``Conv1d`` with kernel 2)."""

    def __init__(self, n_inputs: int, channels: int, dilations: Sequence[int]):
        super().__init__()
        self.dilations = tuple(dilations)
        width = lambda i: n_inputs if i == 0 else channels
        self.now = nn.ModuleList(nn.Linear(width(i), channels) for i in range(len(self.dilations)))
        self.past = nn.ModuleList(nn.Linear(width(i), channels, bias=False)
                                  for i in range(len(self.dilations)))

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.dilations)

    def forward(self, x: Tensor) -> Tensor:  # [B, N, C_in] -> [B, N, C]
        h = x
        for now, past, d in zip(self.now, self.past, self.dilations):
            h = F.relu(now(h) + F.pad(past(h), (0, 0, d, 0))[:, :h.shape[1]])
        return h


# ---------------------------------------------------------------- the forecaster

class QuantileForecaster(nn.Module):
    """MQ-CNN: quantiles of cumulative demand over horizons 1..K at every creation time."""

    def __init__(self, quantiles: Sequence[float], horizons: int, n_features: int = 0,
                 channels: int = 16, dilations: Sequence[int] = (1, 2, 4, 8, 16),
                 hidden: int = 32, local_hidden: int = 16):
        super().__init__()
        levels = [float(q) for q in quantiles]
        if not levels or levels != sorted(levels) or len(set(levels)) != len(levels) \
                or not all(0.0 < q < 1.0 for q in levels):
            raise ValueError(f"quantile levels must be distinct, sorted and in (0, 1); got {list(quantiles)}")
        if horizons < 1:
            raise ValueError(f"horizons must be at least 1; got {horizons}")
        self.quantiles, self.horizons, self.n_features = levels, int(horizons), int(n_features)
        K, Fn, Q = self.horizons, self.n_features, len(levels)
        self.encoder = CausalEncoder(1 + Fn, channels, dilations)
        # the MLPs' first layers are split by input (context, features) to avoid big concatenations
        self.global_context = nn.Linear(channels, hidden)
        self.global_features = nn.Linear(K * Fn, hidden, bias=False) if Fn else None
        # one context per horizon plus one shared, each the local MLP's first-layer input
        self.global_out = nn.Linear(hidden, (K + 1) * local_hidden)
        self.local_features = nn.Linear(Fn, local_hidden, bias=False) if Fn else None
        self.local_base = nn.Linear(local_hidden, 1)
        self.local_steps = nn.Linear(local_hidden, Q - 1)
        # quantile j = base + sum of the first j softplus steps: steps [.., Q-1] @ this [Q-1, Q]
        self.register_buffer("step_sum", torch.triu(torch.ones(Q - 1, Q), diagonal=1), persistent=False)
        self.register_buffer("feature_mean", torch.zeros(Fn))
        self.register_buffer("feature_std", torch.ones(Fn))
        with torch.no_grad():  # start near one period's mean demand per period, levels apart
            self.local_base.bias.fill_(0.6)
            self.local_steps.bias.fill_(math.log(math.expm1(0.2)))

    def forward(self, demand: Tensor, features: Tensor, t0: int, t1: int) -> tuple[Tensor, Tensor]:
        """Forecasts created at t = t0 .. t1 - 1 from ``demand`` (periods before t1 - 1 are
        read) and standardised ``features`` (periods up to t1 + K - 2, zero padded).
        Returns quantiles per period in units of scale [B, T, K, Q] (multiply by
        ``k * scale`` for cumulative demand) and the scale [B, T]."""
        if t0 < 1:
            raise ValueError("a forecast needs at least one period of history (t0 >= 1)")
        K = self.horizons
        past = demand[:, :t1 - 1]
        scale_all = expanding_scale(past)                    # [B, t1]: scale_t for t = 0..t1-1
        x = torch.cat([(past / scale_all[:, 1:])[..., None], features[:, :t1 - 1]], dim=2)
        h = self.encoder(x)[:, t0 - 1:t1 - 1]                 # [B, T, C]: context at t - 1
        future = features[:, t0:t1 - 1 + K].unfold(1, K, 1).transpose(2, 3)  # [B, T, K, F]
        g = self.global_context(h)
        if self.global_features is not None:
            g = g + self.global_features(future.flatten(2))
        g = self.global_out(F.relu(g)).view(*h.shape[:2], K + 1, -1)
        z = g[:, :, :K] + g[:, :, K:]
        if self.local_features is not None:
            z = z + self.local_features(future)
        z = F.relu(z)
        per_period = self.local_base(z) + F.softplus(self.local_steps(z)) @ self.step_sum
        return per_period, scale_all[:, t0:t1]

    def standardise(self, features: Tensor) -> Tensor:
        return (features - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def predict(self, batch: ProductBatch, start: int, horizon: int, chunk: int = 1024) -> Tensor:
        """Quantiles of cumulative demand over periods t .. t + k - 1, forecast at each
        decision period t = start .. start + horizon - 1 from demand before t and the known
        features [B, horizon, K, Q] (non-negative)."""
        feats = batch_features(batch)
        if feats.shape[2] != self.n_features:
            raise ValueError(f"the forecaster was trained with {self.n_features} features; "
                             f"the batch has {feats.shape[2]}")
        if start < 1 or start + horizon > batch.periods + 1:
            raise ValueError(f"forecasts from period {start} for {horizon} periods need 1 <= start and "
                             f"start + horizon <= {batch.periods + 1}")
        t1 = start + horizon
        feats = F.pad(self.standardise(feats), (0, 0, 0, max(0, t1 - 1 + self.horizons - batch.periods)))
        k = torch.arange(1, self.horizons + 1, dtype=batch.demand.dtype, device=batch.demand.device)
        out = []
        for i in range(0, batch.size, chunk):
            per_period, scale = self(batch.demand[i:i + chunk], feats[i:i + chunk], start, t1)
            out.append((per_period * (k[:, None] * scale[:, :, None, None])).clamp_min(0.0))
        return torch.cat(out, 0) if out else batch.demand.new_zeros(0, horizon, self.horizons, len(self.quantiles))


def fit_forecaster(batch: ProductBatch, train_end: int, quantiles: Sequence[float], horizons: int,
                   epochs: int = 30, lr: float = 3e-3, batch_size: int = 256, channels: int = 16,
                   dilations: Sequence[int] = (1, 2, 4, 8, 16), hidden: int = 32,
                   local_hidden: int = 16, min_history: int = 8,
                   seed: int = 0, progress: Callable[[int, float], None] | None = None,
                   ) -> tuple[QuantileForecaster, list[float]]:
    """Train one forecaster on every series of ``batch`` with targets in periods before
    ``train_end``: creation times ``min_history .. train_end - K``, all of a series in one
    pass. Returns the model (in eval mode) and the mean training pinball loss per epoch
    (scaled units). Deterministic given ``seed``; ``progress(epoch, loss)`` after each epoch."""
    t0, t1 = int(min_history), int(train_end) - int(horizons) + 1
    if t0 < 1 or t1 <= t0 or train_end > batch.periods:
        raise ValueError(f"no creation times to train on: min_history={min_history}, train_end={train_end}, "
                         f"horizons={horizons}, {batch.periods} periods (need 1 <= min_history <= "
                         f"train_end - horizons, train_end <= periods)")
    feats = batch_features(batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = QuantileForecaster(quantiles, horizons, feats.shape[2], channels, dilations, hidden,
                                   local_hidden).to(batch.demand.device, batch.demand.dtype)
    if feats.shape[2]:
        seen = feats[:, :train_end].reshape(-1, feats.shape[2])
        std = seen.std(dim=0, correction=0)
        model.feature_mean.copy_(seen.mean(dim=0))
        model.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    feats = model.standardise(feats)[:, :train_end]
    demand = batch.demand[:, :train_end]
    targets = cumulative_targets(demand, t0, t1, model.horizons)         # [B, T, K]
    k = torch.arange(1, model.horizons + 1, dtype=demand.dtype, device=demand.device)
    levels = torch.tensor(model.quantiles, dtype=demand.dtype, device=demand.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(batch.size, generator=gen).to(demand.device)
        total, count = 0.0, 0
        for i in range(0, batch.size, batch_size):
            idx = order[i:i + batch_size]
            per_period, scale = model(demand[idx], feats[idx], t0, t1)
            y = targets[idx] / (k * scale[:, :, None])
            loss = pinball_loss(y, per_period, levels).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / count)
        if progress is not None:
            progress(epoch, history[-1])
    model.eval()
    return model, history


# ---------------------------------------------------------------- policies

class QuantileOrderUpTo:
    """Order up to the forecast quantile, at each product's critical fractile (or at
    ``level``), of the demand over its lead time plus one period (cumulative horizon
    L + 1), re-forecast every period. ``model`` is anything with ``quantiles`` and
    ``predict(batch, start, horizon) -> [B, horizon, K, Q]``."""

    def __init__(self, problem: Problem, model: QuantileForecaster, objective: str, interpolate: bool = True,
                 level: float | None = None):
        self.problem, self.model, self.objective, self.interpolate = problem, model, objective, interpolate
        self.level = level  # a service level for every product instead of the critical fractile

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Tensor:
        """Order-up-to levels [B, horizon]."""
        forecast = self.model.predict(batch, start, horizon)        # [B, H, K, Q]
        K = forecast.shape[2]
        L = batch.lead_time.to(forecast.device).long()
        if bool((L + 1 > K).any()):
            raise ValueError(f"lead times up to {int(L.max())} need forecast horizons up to "
                             f"{int(L.max()) + 1}; the forecaster has {K}")
        own = forecast.gather(2, L.view(-1, 1, 1, 1).expand(-1, horizon, 1, forecast.shape[3]))[:, :, 0]
        u = critical_fractile(batch, self.objective) if self.level is None else torch.full(
            (batch.size,), float(self.level), dtype=forecast.dtype, device=forecast.device)
        return quantile_at(own, self.model.quantiles, u, self.interpolate).to(batch.demand.dtype)

    def act(self, levels: Tensor, t: int, state: Tensor) -> Tensor:
        return order_up_to(self.problem, levels[:, t], state)


def moving_moments(demand: Tensor, start: int, horizon: int, window: int) -> tuple[Tensor, Tensor]:
    """Mean and sample standard deviation of the last ``window`` periods' demand before each
    t = start .. start + horizon - 1 [B, horizon] each."""
    if window < 2 or start < window:
        raise ValueError(f"a {window}-period moving average needs window >= 2 and start >= window; "
                         f"start is {start}")
    past = demand[:, start - window:start + horizon - 1].unfold(1, window, 1)  # [B, H, window]
    return past.mean(dim=2), past.std(dim=2)


def normal_quantile(level: Tensor) -> Tensor:
    return torch.distributions.Normal(0.0, 1.0).icdf(level.double().clamp(1e-6, 1 - 1e-6))


class MovingAverageOrderUpTo:
    """Order up to ``(L + 1) * mean + z * std * sqrt(L + 1)``, mean and std of the last
    ``window`` periods' demand, z the standard normal quantile at the critical fractile."""

    def __init__(self, problem: Problem, window: int, objective: str):
        self.problem, self.window, self.objective = problem, int(window), objective

    def prepare(self, batch: ProductBatch, start: int, horizon: int) -> Tensor:
        mean, std = moving_moments(batch.demand, start, horizon, self.window)
        z = normal_quantile(critical_fractile(batch, self.objective)).to(mean.dtype)[:, None]
        k = batch.lead_time.to(mean.dtype)[:, None] + 1
        return k * mean + z * std * k.sqrt()

    def act(self, levels: Tensor, t: int, state: Tensor) -> Tensor:
        return order_up_to(self.problem, levels[:, t], state)


# ---------------------------------------------------------------- accuracy

def quantile_metrics(pred: Tensor, y: Tensor, quantiles: Sequence[float]) -> dict[str, float]:
    """wQL per level (``2 * sum pinball / sum |y|``), their mean, and coverage (share of
    targets at or below the predicted quantile) per level; ``pred`` [..., Q], ``y`` [...]."""
    levels = torch.tensor(list(quantiles), dtype=torch.float64)
    pred, y = pred.double().cpu(), y.double().cpu()
    loss = pinball_loss(y, pred, levels).reshape(-1, len(levels)).sum(0)
    wql = 2.0 * loss / y.abs().sum().clamp_min(1e-12)
    cover = (y[..., None] <= pred).double().reshape(-1, len(levels)).mean(0)
    out = {f"wql_{q:g}": float(w) for q, w in zip(quantiles, wql)}
    out["mean_wql"] = float(wql.mean())
    out.update({f"coverage_{q:g}": float(c) for q, c in zip(quantiles, cover)})
    return out


def _creation_times(start: int, stop: int, horizon_k: int) -> int:
    count = stop - horizon_k - start + 1
    if count < 1:
        raise ValueError(f"no creation time in [{start}, {stop} - {horizon_k}]")
    return count


def forecast_metrics(model: QuantileForecaster, batch: ProductBatch, start: int, stop: int,
                     quantiles: Sequence[float], horizon_k: int) -> dict[str, float]:
    """Accuracy of the cumulative horizon-``k`` forecasts created at t in
    [start, stop - k] (targets in periods before ``stop``), at ``quantiles``
    (interpolated between the model's levels)."""
    count = _creation_times(start, stop, horizon_k)
    if not 1 <= horizon_k <= model.horizons:
        raise ValueError(f"horizon {horizon_k} outside the forecaster's 1..{model.horizons}")
    pred = model.predict(batch, start, count)[:, :, horizon_k - 1]  # [B, T, Q_model]
    at = torch.stack([quantile_at(pred, model.quantiles, torch.full((batch.size,), float(q)))
                      for q in quantiles], dim=-1)
    y = cumulative_targets(batch.demand, start, start + count, horizon_k)[:, :, -1]
    return quantile_metrics(at, y, quantiles)


def moving_average_metrics(batch: ProductBatch, start: int, stop: int, quantiles: Sequence[float],
                           horizon_k: int, window: int) -> dict[str, float]:
    """The same metrics for the moving-average normal forecast of ``MovingAverageOrderUpTo``."""
    count = _creation_times(start, stop, horizon_k)
    mean, std = moving_moments(batch.demand, start, count, window)
    z = normal_quantile(torch.tensor(list(quantiles))).to(mean.dtype)
    pred = horizon_k * mean[..., None] + z * std[..., None] * math.sqrt(horizon_k)
    y = cumulative_targets(batch.demand, start, start + count, horizon_k)[:, :, -1]
    return quantile_metrics(pred, y, quantiles)
