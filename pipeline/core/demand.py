"""Demand distributions: sampling, probability mass functions and their moments.

Only the ground truth of synthetic data has a distribution: the omniscient baseline, the
exact DP and the heuristics read it; a policy never does.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch

DISTRIBUTIONS = ("poisson", "negbin", "zip", "gamma", "uniform")
GAMMA_MAX = 100  # discretised gamma demand is truncated here (docs/problems/perishable.md)


def sample_demand(rng: np.random.Generator, dist: np.ndarray, mean: np.ndarray,
                  shape: np.ndarray, periods: int) -> np.ndarray:
    """Integer demand [B, periods] from each product's own distribution.

    poisson(mean); negbin with mean and shape k (variance mean + mean^2 / k);
    zip: zero-inflated Poisson with P(structural zero) = shape and overall mean ``mean``;
    gamma: gamma with this mean and coefficient of variation ``shape``, rounded to the
    nearest integer, at most ``GAMMA_MAX`` (De Moor et al.'s discretisation, docs/problems/perishable.md);
    uniform: uniform on the integers 0..2 * mean.
    """
    out = np.zeros((len(dist), periods), dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float64)[:, None]
    shape = np.asarray(shape, dtype=np.float64)[:, None]
    for name in np.unique(dist):
        m = dist == name
        if name == "poisson":
            out[m] = rng.poisson(mean[m], size=(m.sum(), periods))
        elif name == "negbin":
            k = shape[m]
            out[m] = rng.negative_binomial(k, k / (k + mean[m]), size=(m.sum(), periods))
        elif name == "zip":
            zero = shape[m]
            rate = mean[m] / (1.0 - zero)
            out[m] = rng.poisson(rate, size=(m.sum(), periods)) * (rng.random((m.sum(), periods)) >= zero)
        elif name == "gamma":
            k = 1.0 / shape[m] ** 2
            draws = rng.gamma(k, mean[m] / k, size=(m.sum(), periods))
            out[m] = np.minimum(np.floor(draws + 0.5), GAMMA_MAX)
        elif name == "uniform":
            top = np.round(2 * mean[m])
            out[m] = np.floor(rng.random((m.sum(), periods)) * (top + 1))
        else:
            raise ValueError(f"unknown demand distribution {name!r}; known: {', '.join(DISTRIBUTIONS)}")
    return out


def demand_pmf(dist: np.ndarray, mean: Tensor, shape: Tensor, max_units: int) -> Tensor:
    """P(D = d) for d = 0..max_units, per product [B, max_units + 1] (float64)."""
    d = torch.arange(max_units + 1, dtype=torch.float64)[None, :]
    mean = mean.double()[:, None]
    shape = shape.double()[:, None]
    out = torch.zeros(len(dist), max_units + 1, dtype=torch.float64)
    for name in np.unique(dist):
        m = torch.as_tensor(dist == name)
        mu, k = mean[m], shape[m]
        if name == "poisson":
            logp = d * torch.log(mu) - mu - torch.lgamma(d + 1)
            out[m] = torch.exp(logp)
        elif name == "negbin":
            logp = (torch.lgamma(d + k) - torch.lgamma(k) - torch.lgamma(d + 1)
                    + k * torch.log(k / (k + mu)) + d * torch.log(mu / (k + mu)))
            out[m] = torch.exp(logp)
        elif name == "zip":
            rate = mu / (1 - k)
            pois = torch.exp(d * torch.log(rate) - rate - torch.lgamma(d + 1))
            out[m] = (1 - k) * pois + k * (d == 0)
        elif name == "gamma":
            a = 1.0 / k ** 2  # gamma shape from the coefficient of variation
            cdf = torch.special.gammainc(a, (d + 0.5).clamp(max=GAMMA_MAX - 0.5) * a / mu)
            cdf = torch.where(d >= GAMMA_MAX, torch.ones_like(cdf), cdf)
            out[m] = torch.diff(cdf, dim=1, prepend=torch.zeros_like(cdf[:, :1]))
        elif name == "uniform":
            top = torch.round(2 * mu)
            out[m] = (d <= top).double() / (top + 1)
        else:
            raise ValueError(f"unknown demand distribution {name!r}")
    return out


def demand_std(dist: np.ndarray, mean: np.ndarray, shape: np.ndarray) -> np.ndarray:
    mean, shape = np.asarray(mean, float), np.asarray(shape, float)
    var = np.where(dist == "negbin", mean + mean**2 / np.maximum(shape, 1e-9), mean)
    rate = mean / np.maximum(1 - shape, 1e-9)
    var = np.where(dist == "zip", (1 - shape) * rate * (1 + shape * rate), var)
    var = np.where(dist == "gamma", (shape * mean) ** 2 + 1 / 12, var)  # + rounding
    top = np.round(2 * mean)
    var = np.where(dist == "uniform", top * (top + 2) / 12, var)
    return np.sqrt(var)


def true_pmf(batch: ProductBatch) -> Tensor:
    """Each product's true single-period demand pmf on 0..top, far into the tail [B, top+1]."""
    std = demand_std(batch.true_dist, batch.true_mean.numpy(), batch.true_shape.numpy())
    top = int(np.ceil((batch.true_mean.numpy() + 12 * std).max())) + 10
    return demand_pmf(batch.true_dist, batch.true_mean, batch.true_shape, top)


def trimmed_pmf(pmf: Tensor, eps: float = 1e-12) -> Tensor:
    """The pmf [K] (or one per row, [B, K]) cut where every remaining tail is below ``eps``,
    each row's tail added to its last value."""
    pmf = pmf.double()
    tail = tail_probability(pmf)
    top = int((tail > eps).reshape(-1, tail.shape[-1]).any(dim=0).nonzero().max())
    out = pmf[..., : top + 1].clone()
    out[..., -1] += 1.0 - out.sum(dim=-1)
    return out


def tail_probability(pmf: Tensor) -> Tensor:
    """P(D >= d) for each d, along the last dimension of a pmf."""
    return torch.flip(torch.cumsum(torch.flip(pmf, [-1]), -1), [-1])
