"""Product histories: the batch type, the synthetic population, Parquet I/O.

One product per row. Columns: ``product_id``, ``demand`` (list of float, one value per
period), the economics ``holding_cost``, ``shortage_cost``, ``unit_cost``, ``price``,
``lead_time``, and the ground truth ``true_dist``, ``true_mean``, ``true_shape`` that only
the omniscient baseline reads (a policy never sees distribution parameters).
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

DISTRIBUTIONS = ("poisson", "negbin", "zip", "gamma", "uniform")
GAMMA_MAX = 100  # discretised gamma demand is truncated here (GUIDE 2.2)
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


# ---------------------------------------------------------------- distributions

def sample_demand(rng: np.random.Generator, dist: np.ndarray, mean: np.ndarray,
                  shape: np.ndarray, periods: int) -> np.ndarray:
    """Integer demand [B, periods] from each product's own distribution.

    poisson(mean); negbin with mean and shape k (variance mean + mean^2 / k);
    zip: zero-inflated Poisson with P(structural zero) = shape and overall mean ``mean``;
    gamma: gamma with this mean and coefficient of variation ``shape``, rounded to the
    nearest integer, at most ``GAMMA_MAX`` (De Moor et al.'s discretisation, GUIDE 2.2);
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


# ---------------------------------------------------------------- synthetic population

def synthetic_population(cfg, seed: int) -> dict[str, np.ndarray]:
    """Draw ``cfg.num_products`` products (distribution, parameters, economics, lead time)
    and their demand histories. ``cfg`` is a ``DataConfig``; deterministic by seed."""
    rng = np.random.default_rng(seed)
    n = cfg.num_products
    dist = rng.choice(np.asarray(cfg.distributions), size=n)
    lo, hi = cfg.mean_range
    mean = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n)) if hi > lo else np.full(n, lo)
    shape = np.zeros(n)
    nb = dist == "negbin"
    shape[nb] = rng.uniform(*cfg.negbin_shape_range, size=nb.sum())
    zp = dist == "zip"
    shape[zp] = rng.uniform(*cfg.zero_prob_range, size=zp.sum())
    gm = dist == "gamma"
    shape[gm] = rng.uniform(*cfg.gamma_cv_range, size=gm.sum())
    cols = {
        "product_id": np.arange(n, dtype=np.int64),
        "true_dist": dist.astype(str),
        "true_mean": mean,
        "true_shape": shape,
        "lead_time": rng.integers(cfg.lead_time_range[0], cfg.lead_time_range[1] + 1, size=n),
    }
    for name in ECONOMICS:
        a, b = getattr(cfg, f"{name}_range")
        cols[name] = rng.uniform(a, b, size=n) if b > a else np.full(n, float(a))
    cols["demand"] = sample_demand(rng, dist, mean, shape, cfg.periods)
    return cols


def split_products(n: int, valid_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Held-out products: a seeded permutation cut into train / valid / test."""
    order = np.random.default_rng(seed + 7919).permutation(n)
    n_test, n_valid = int(round(n * test_fraction)), int(round(n * valid_fraction))
    return {"test": np.sort(order[:n_test]), "valid": np.sort(order[n_test:n_test + n_valid]),
            "train": np.sort(order[n_test + n_valid:])}


def to_arrow(cols: dict[str, np.ndarray], index: np.ndarray | None = None) -> pa.Table:
    index = np.arange(len(cols["product_id"])) if index is None else index
    demand = np.ascontiguousarray(cols["demand"][index], dtype=np.float32)
    n, periods = demand.shape
    offsets = pa.array(np.arange(0, (n + 1) * periods, periods, dtype=np.int32))
    arrays = {"product_id": pa.array(cols["product_id"][index]),
              "demand": pa.ListArray.from_arrays(offsets, pa.array(demand.reshape(-1)))}
    for k in ("true_dist", "true_mean", "true_shape", "lead_time", *ECONOMICS):
        arrays[k] = pa.array(np.asarray(cols[k])[index])
    return pa.table(arrays)


def write_shards(table: pa.Table, folder: Path, shard_rows: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        path = folder / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(start, shard_rows), path)
        paths.append(path)
    return paths


def read_products(folder: str | Path) -> ProductBatch:
    """Read every Parquet shard under ``folder`` into one batch (for evaluation)."""
    table = pq.read_table(str(folder))
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    return batch_from_columns(cols)


# ---------------------------------------------------------------- datasets on disk

def parquet_files(path: str | Path) -> list[Path]:
    """The file itself, or every ``*.parquet`` under the folder, sorted."""
    root = Path(path)
    return [root] if root.is_file() else sorted(root.rglob("*.parquet"))


def count_rows(path: str | Path) -> int:
    """Rows in a Parquet file or folder (every ``*.parquet`` under it), from the footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def data_version(path: str | Path) -> str:
    """A short hash that changes when a Parquet dataset does: over every Parquet file under
    ``path`` (or the file itself), its path relative to ``path``, size and row count (read
    from the footer, so hashing a million products costs one footer read per shard)."""
    import hashlib

    root = Path(path)
    files = parquet_files(root)
    digest = hashlib.sha256()
    for f in files:
        rel = f.name if f == root else f.relative_to(root).as_posix()
        digest.update(f"{rel}:{f.stat().st_size}:{pq.ParquetFile(f).metadata.num_rows};".encode())
    return digest.hexdigest()[:12]


SPLITS = ("train", "valid", "test")


def materialize(cfg, seed: int, out_dir: Path, min_periods: dict[str, int] | None = None) -> dict[str, Path]:
    """The train / valid / test Parquet folders for a job.

    With ``data.path`` set they are its ``train``, ``valid`` and ``test`` subfolders, each
    checked by ``validate_products`` (histories of ``min_periods[split]`` or more).
    Otherwise the synthetic population of ``cfg`` (a ``DataConfig``) is written once under
    ``out_dir/data/<hash of the data config and seed>`` and reused by later jobs.
    """
    import hashlib
    import json
    from dataclasses import asdict

    if cfg.path:
        root = Path(cfg.path).expanduser().resolve()
        splits = {s: root / s for s in SPLITS}
        missing = [str(p) for p in splits.values() if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"data.path {root} must hold train/, valid/ and test/ Parquet "
                                    f"folders; missing: {', '.join(missing)}")
        for name, folder in splits.items():
            c = validate_products(folder, (min_periods or {}).get(name, 1))
            empty = f", {c['empty_files']} empty files skipped" if c["empty_files"] else ""
            print(f"[data] {name}: {c['products']:,} products x {c['periods']} periods in {c['files']} files{empty}",
                  flush=True)
        return splits
    spec = {k: v for k, v in asdict(cfg).items() if k not in ("path", "shard_rows")}
    key = hashlib.sha256(json.dumps({"seed": seed, **spec}, sort_keys=True, default=list).encode()).hexdigest()[:12]
    root = out_dir / "data" / f"synthetic-{key}"
    splits = {s: root / s for s in SPLITS}
    if (root / "_SUCCESS").exists():
        return splits
    # written aside and renamed into place, so concurrent jobs never read half a dataset
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cols = synthetic_population(cfg, seed)
    index = split_products(cfg.num_products, cfg.valid_fraction, cfg.test_fraction, seed)
    for name in SPLITS:
        write_shards(to_arrow(cols, index[name]), tmp / name, cfg.shard_rows)
    (tmp / "spec.json").write_text(json.dumps({"seed": seed, **spec}, indent=2, default=list))
    (tmp / "_SUCCESS").touch()
    if root.exists() and not (root / "_SUCCESS").exists():
        shutil.rmtree(root)  # left by an interrupted writer
    try:
        os.rename(tmp, root)
    except OSError:  # another job finished the same dataset first
        shutil.rmtree(tmp, ignore_errors=True)
    return splits


# ---------------------------------------------------------------- checking a dataset

REQUIRED_COLUMNS = ("product_id", "demand", "lead_time", *ECONOMICS)


def validate_products(path: str | Path, min_periods: int = 1) -> dict[str, int]:
    """Check a Parquet file or folder of product rows before a job reads it; a problem is a
    ``DataError`` naming the file, the column and how many rows. Checked: files readable,
    the columns ``REQUIRED_COLUMNS`` present with numeric types (``demand`` a list), no
    NaN or infinite values, no negative demand, costs or lead times, one row per
    ``product_id``, every history ``min_periods`` long or more and all of the same length.
    Files with no rows are skipped and counted. Returns the counts: files, empty files,
    products, periods."""
    from pipeline.errors import DataError

    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    files = parquet_files(root)
    if not files:
        raise DataError(f"{root}: no Parquet files")
    counts, ids, lengths = {"files": len(files), "empty_files": 0, "products": 0, "periods": 0}, [], set()
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as e:  # truncated, corrupt, not Parquet at all
            reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            raise DataError(f"{f}: not a readable Parquet file ({reason})") from None
        if table.num_rows == 0:
            counts["empty_files"] += 1
            continue
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{f}: no column {', '.join(missing)} (a product row has {', '.join(REQUIRED_COLUMNS)})")
        lengths |= _check_columns(f, table, min_periods)
        ids.append(table.column("product_id").to_numpy(zero_copy_only=False))
        counts["products"] += table.num_rows
    if counts["products"] == 0:
        raise DataError(f"{root}: every Parquet file is empty ({len(files)} files, no rows)")
    all_ids = np.concatenate(ids)
    unique, seen = np.unique(all_ids, return_counts=True)
    if (seen > 1).any():
        raise DataError(f"{root}: column product_id: {int((seen - 1).sum())} duplicate rows "
                        f"({int((seen > 1).sum())} products appear more than once, e.g. {unique[seen > 1][0]!r})")
    if len(lengths) > 1:
        raise DataError(f"{root}: column demand: histories of different lengths {sorted(lengths)[:5]}; "
                        "every product needs the same periods")
    counts["periods"] = lengths.pop()
    return counts


def _check_columns(f: Path, table: pa.Table, min_periods: int) -> set[int]:
    """The per-file checks of ``validate_products``; returns the history lengths seen."""
    import pyarrow.compute as pc

    from pipeline.errors import DataError

    demand = table.column("demand")
    if not (pa.types.is_list(demand.type) or pa.types.is_large_list(demand.type)) \
            or not pa.types.is_floating(demand.type.value_type) and not pa.types.is_integer(demand.type.value_type):
        raise DataError(f"{f}: column demand has type {demand.type}; expected a list of numbers per product")
    sizes = pc.list_value_length(demand).to_numpy(zero_copy_only=False)
    nulls = int(demand.null_count)
    if nulls:
        raise DataError(f"{f}: column demand: {nulls} rows with no history (null)")
    short = sizes < min_periods
    if short.any():
        raise DataError(f"{f}: column demand: {int(short.sum())} rows with histories shorter than {min_periods} "
                        f"periods (shortest {int(sizes.min())}); the policy's window and rollouts need {min_periods}")
    values = pc.list_flatten(demand).to_numpy(zero_copy_only=False).astype(np.float64)
    row = np.repeat(np.arange(len(sizes)), sizes)
    _check_values(f, "demand", values, row, "negative demand")
    for name in (*ECONOMICS, "lead_time"):
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DataError(f"{f}: column {name} has type {column.type}; expected numbers")
        if column.null_count:
            raise DataError(f"{f}: column {name}: {column.null_count} rows with no value (null)")
        _check_values(f, name, column.to_numpy(zero_copy_only=False).astype(np.float64),
                      np.arange(table.num_rows), f"a negative {name}")
    lead = table.column("lead_time").to_numpy(zero_copy_only=False)
    fractional = lead != np.round(lead)
    if fractional.any():
        raise DataError(f"{f}: column lead_time: {int(fractional.sum())} rows with a fractional lead time")
    return set(np.unique(sizes).tolist())


def _check_values(f: Path, name: str, values: np.ndarray, row: np.ndarray, what: str) -> None:
    from pipeline.errors import DataError

    for bad, label in ((~np.isfinite(values), "NaN or infinite values"), (values < 0, what)):
        if bad.any():
            raise DataError(f"{f}: column {name}: {len(np.unique(row[bad]))} rows with {label}")
