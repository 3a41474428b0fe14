"""The batch type every part of the core works on: product histories as tensors.

One product per row: ``product_id``, ``demand`` [B, N] (one value per period), the
economics ``holding_cost``, ``shortage_cost``, ``unit_cost``, ``price``, ``lead_time``, and
the ground truth ``true_dist``, ``true_mean``, ``true_shape`` that only the omniscient
baseline reads (a policy never sees distribution parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

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
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                cast = dtype if (dtype is not None and v.is_floating_point()) else None
                v = v.to(device=device, dtype=cast)
            moved[f.name] = v
        return ProductBatch(**moved)

    def select(self, index) -> "ProductBatch":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = v[torch.as_tensor(index, device=v.device)]
            elif v is None or isinstance(v, tuple):
                out[f.name] = v
            else:
                out[f.name] = v[np.asarray(index if not isinstance(index, Tensor) else index.cpu())]
        return ProductBatch(**out)

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
    """One batch from several with the same periods and feature names."""
    def merge(values):
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values)
        if values[0] is None or isinstance(values[0], tuple):  # features absent; feature names
            return values[0]
        return np.concatenate(values)

    return ProductBatch(**{k: merge([getattr(p, k) for p in parts]) for k in parts[0].__dataclass_fields__})


FEATURE_PREFIX = "feature_"


def batch_from_columns(cols: dict, dtype=torch.float32) -> ProductBatch:
    """Build a batch from a dict of numpy columns (a Ray Data numpy batch or a table).
    Every ``feature_<name>`` list column becomes a channel of ``features``, by name."""
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
    )
