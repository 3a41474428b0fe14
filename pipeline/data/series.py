"""The series layout: real or retail-like product histories as Parquet, one series per row. Its
columns: docs/favorita.md, The series layout.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.calendar import calendar_features
from pipeline.core.batch import FEATURE_PREFIX
from pipeline.data.parquet import parquet_files

STATIC = {"product_id": pa.int64(), "series_id": pa.string(), "store": pa.int32(), "item": pa.int32(),
          "perishable": pa.int8(), "start_date": pa.date32(), "frequency": pa.string()}
MANIFEST = "manifest.json"


def list_column(values: np.ndarray) -> pa.ListArray:
    """[S, N] -> list<float32> of N values per row."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    s, n = values.shape
    offsets = pa.array(np.arange(0, (s + 1) * n, n, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def series_table(demand: np.ndarray, start_date: str, frequency: str, product_id: np.ndarray,
                 series_id=None, store=None, item=None, perishable=None,
                 features: dict[str, np.ndarray] | None = None) -> pa.Table:
    """Assemble the layout from [S, N] arrays; calendar features are added here, so every
    source gets the same ones."""
    s, n = demand.shape
    product_id = np.asarray(product_id, dtype=np.int64)
    fill = lambda v, default, dt: np.full(s, default, dt) if v is None else np.asarray(v).astype(dt)  # noqa: E731
    cols = {
        "product_id": pa.array(product_id),
        "series_id": pa.array(fill(series_id, "", object) if series_id is not None
                              else np.array([f"p{i}" for i in product_id], dtype=object), pa.string()),
        "store": pa.array(fill(store, -1, np.int32)),
        "item": pa.array(fill(item, -1, np.int32)),
        "perishable": pa.array(fill(perishable, 0, np.int8)),
        "start_date": pa.array(np.full(s, np.datetime64(str(start_date), "D"))).cast(pa.date32()),
        "frequency": pa.array([frequency] * s, pa.string()),
        "demand": list_column(demand),
    }
    own = dict(features or {})
    for name, values in calendar_features(start_date, n, frequency).items():
        own.setdefault(name, np.broadcast_to(values, (s, n)))
    for name in sorted(own):
        values = np.asarray(own[name])
        if values.shape != (s, n):
            raise ValueError(f"feature {name!r} has shape {values.shape}, expected {(s, n)}")
        cols[FEATURE_PREFIX + name] = list_column(values)
    return pa.table(cols)


def write_manifest(folder: Path, **info) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(info, indent=2, default=str))


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def read_series(path) -> pa.Table:
    """The series layout from a Parquet file or folder (its ``*.parquet`` files)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no Parquet data at {path}")
    table = pq.read_table(str(path)) if path.is_file() else pq.ParquetDataset(
        [str(p) for p in parquet_files(path)]).read()
    missing = [c for c in ("product_id", "demand", "start_date", "frequency") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not in the series layout (missing {', '.join(missing)})")
    return table.sort_by("product_id")


def matrix(table: pa.Table, column: str) -> np.ndarray:
    """A list column as a [S, N] float32 array."""
    col = table.column(column).combine_chunks()
    n = len(col[0]) if len(col) else 0
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(col), n)
