"""The batch type every part of the core works on: product histories as tensors.

One product per row: ``product_id``, ``demand`` [B, N] (one value per period), the
economics ``holding_cost``, ``shortage_cost``, ``unit_cost``, ``price``, ``lead_time``, and
the ground truth ``true_dist``, ``true_mean``, ``true_shape`` that only the omniscient
baseline reads (a policy never sees distribution parameters), and ``params``: per-product
problem parameters by name (any other scalar column, e.g. ``expedited_cost``), which a
problem reads in place of its population constant (``problems.base.ProblemBase.param``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torch import Tensor

ECONOMICS = ("holding_cost", "shortage_cost", "unit_cost", "price")


@dataclass
class ProductBatch:
    """A batch of product histories as tensors (demand [B, N], the rest [B])."""

    demand: Tensor
    holding_cost: Tensor
    shortage_cost: Tensor
    unit_cost: Tensor
    price: Tensor
    lead_time: Tensor  # long
    true_mean: Tensor  # ground truth, omniscient baseline only
    true_shape: Tensor
    true_dist: np.ndarray  # str per product
    product_id: np.ndarray
    features: Tensor | None = None  # [B, N, F] covariates known in advance (promotions, calendar)
    feature_names: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)  # name -> [B] tensor (numbers) or array (choices)

    def feature(self, names) -> Tensor:
        """The named feature channels [B, N, len(names)], in that order."""
        missing = [n for n in names if n not in self.feature_names]
        if missing:
            raise ValueError(f"the data has no feature {missing[0]!r}; it has "
                             f"{', '.join(self.feature_names) or 'none'}")
        index = [self.feature_names.index(n) for n in names]
        return self.features[:, :, index]

    @property
    def size(self) -> int:
        return self.demand.shape[0]

    @property
    def periods(self) -> int:
        return self.demand.shape[1]

    def to(self, device, dtype=None) -> "ProductBatch":
        def move(v):
            if isinstance(v, dict):
                return {k: move(x) for k, x in v.items()}
            if isinstance(v, Tensor):
                return v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            return v
        return ProductBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def select(self, index) -> "ProductBatch":
        def pick(v):
            if isinstance(v, dict):
                return {k: pick(x) for k, x in v.items()}
            if isinstance(v, Tensor):
                return v[torch.as_tensor(index, device=v.device)]
            if v is None or isinstance(v, tuple):
                return v
            return v[np.asarray(index if not isinstance(index, Tensor) else index.cpu())]
        return ProductBatch(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})

    def with_demand(self, demand: Tensor) -> "ProductBatch":
        return replace(self, demand=demand)


def _stack(column) -> np.ndarray:
    """A list column arrives as a 2-D array or as an object array of 1-D arrays."""
    arr = np.asarray(column)
    if arr.dtype == object:
        lengths = {len(a) for a in arr}
        if len(lengths) > 1:
            raise ValueError(f"demand histories of different lengths in one batch: {sorted(lengths)}")
        arr = np.stack(arr) if len(arr) else np.zeros((0, 0))
    return arr.astype(np.float32)


def concat_batches(parts: list[ProductBatch]) -> ProductBatch:
    """One batch from several with the same periods, feature names and parameter columns."""
    def merge(values):
        if isinstance(values[0], dict):
            if any(v.keys() != values[0].keys() for v in values):
                raise ValueError(f"batches with different parameter columns: {sorted({*values[0]})}, "
                                 f"{sorted({k for v in values for k in v} - values[0].keys())}")
            return {k: merge([v[k] for v in values]) for k in values[0]}
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values)
        if values[0] is None or isinstance(values[0], tuple):  # features absent; feature names
            return values[0]
        return np.concatenate(values)

    return ProductBatch(**{k: merge([getattr(p, k) for p in parts]) for k in parts[0].__dataclass_fields__})


FEATURE_PREFIX = "feature_"


KNOWN_COLUMNS = ("product_id", "demand", "lead_time", *ECONOMICS, "true_dist", "true_mean", "true_shape")


def _param_column(values, dtype):
    """A per-product parameter: numbers as a tensor, names (a choice) as strings; None for
    anything else (a list column)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        return None
    if arr.dtype.kind in "biuf":
        return torch.as_tensor(arr.astype(np.float64), dtype=dtype)
    return arr.astype(str) if arr.dtype.kind in "US" or all(isinstance(v, str) for v in arr) else None


def batch_from_columns(cols: dict, dtype=torch.float32) -> ProductBatch:
    """Build a batch from a dict of numpy columns (a Ray Data numpy batch or a table).
    Every ``feature_<name>`` list column becomes a channel of ``features``, by name; every
    other column with one value per product goes into ``params`` under its name."""
    f = lambda k: torch.as_tensor(np.array(cols[k], dtype=np.float64), dtype=dtype)  # noqa: E731
    n = len(cols["demand"])
    names = tuple(sorted(k[len(FEATURE_PREFIX):] for k in cols if k.startswith(FEATURE_PREFIX)))
    features = (torch.as_tensor(np.stack([_stack(cols[FEATURE_PREFIX + n]) for n in names], axis=2), dtype=dtype)
                if names else None)
    return ProductBatch(
        demand=torch.as_tensor(_stack(cols["demand"]), dtype=dtype),
        holding_cost=f("holding_cost"), shortage_cost=f("shortage_cost"),
        unit_cost=f("unit_cost"), price=f("price"),
        lead_time=torch.as_tensor(np.array(cols["lead_time"], dtype=np.int64)),
        # the generating distribution: known for synthetic data only (the omniscient baseline)
        true_mean=f("true_mean") if "true_mean" in cols else torch.full((n,), math.nan, dtype=dtype),
        true_shape=f("true_shape") if "true_shape" in cols else torch.full((n,), math.nan, dtype=dtype),
        true_dist=np.asarray(cols["true_dist"]).astype(str) if "true_dist" in cols else np.full(n, "unknown"),
        product_id=np.asarray(cols["product_id"]),
        features=features, feature_names=names,
        params={k: v for k, v in ((k, _param_column(v, dtype)) for k, v in cols.items()
                                  if k not in KNOWN_COLUMNS and not k.startswith(FEATURE_PREFIX)) if v is not None},
    )


def make_batch(demand, lead_time=0, h=1.0, p=4.0, c=0.0, price=0.0, mean=5.0, dist="poisson",
               shape=0.0, **params) -> ProductBatch:
    """A batch from a [B, N] (or [N]) demand array, per-product or scalar economics, the
    true law (``dist``, ``mean``, ``shape``) and per-product problem parameters by name."""
    demand = np.asarray(demand, dtype=np.float32)
    demand = demand[None, :] if demand.ndim == 1 else demand
    n = demand.shape[0]
    full = lambda v: np.broadcast_to(np.asarray(v), (n,)).copy()  # noqa: E731
    number = lambda v: full(v).astype(float)  # noqa: E731
    return batch_from_columns({
        "product_id": np.arange(n), "demand": demand, "holding_cost": number(h), "shortage_cost": number(p),
        "unit_cost": number(c), "price": number(price), "lead_time": number(lead_time).astype(int),
        "true_dist": full(dist), "true_mean": number(mean), "true_shape": number(shape),
        **{k: full(v) for k, v in params.items()}})


def shocked(batch: ProductBatch, kind: str, at: int, factor: float | Tensor, discrete: bool) -> ProductBatch:
    """``batch`` with demand x ``factor`` (a number, or one per product [B, 1]) from period
    ``at`` on (``up``, ``down``) or in period ``at`` only (``spike``); rounded to whole units
    where ``discrete``. The robustness scenarios and the penalty's shock probes use it."""
    if kind not in ("up", "down", "spike"):
        raise ValueError(f"unknown shock {kind!r}; use up, down or spike")
    demand = batch.demand.clone()
    span = slice(at, at + 1) if kind == "spike" else slice(at, None)
    demand[:, span] = demand[:, span] * factor
    if discrete:
        demand = torch.round(demand)
    return replace(batch, demand=demand)
