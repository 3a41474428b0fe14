"""Product histories on disk: Parquet shards, reading them into batches, dataset versions,
and the checks a dataset passes before a job reads it."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.batch import ECONOMICS, ProductBatch, batch_from_columns
from pipeline.core.problems import PROBLEMS
from pipeline.errors import DataError

SPLITS = ("train", "valid", "test")
# per-product problem parameters a product row may carry, by column name: the problem that owns it
PARAMETERS = {f.name: cls for cls in PROBLEMS.values() for f in dataclasses.fields(cls)}


def to_arrow(cols: dict[str, np.ndarray], index: np.ndarray | None = None) -> pa.Table:
    index = np.arange(len(cols["product_id"])) if index is None else index
    demand = np.ascontiguousarray(cols["demand"][index], dtype=np.float32)
    n, periods = demand.shape
    offsets = pa.array(np.arange(0, (n + 1) * periods, periods, dtype=np.int32))
    arrays = {"product_id": pa.array(cols["product_id"][index]),
              "demand": pa.ListArray.from_arrays(offsets, pa.array(demand.reshape(-1)))}
    for k in ("true_dist", "true_mean", "true_shape", "lead_time", *ECONOMICS, *(k for k in cols if k in PARAMETERS)):
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


WIDTHS = {"FLOAT": 4, "DOUBLE": 8, "INT32": 4, "INT64": 8, "BOOLEAN": 1}  # bytes per value once decoded


def memory_size(path: str | Path) -> int:
    """Bytes of a Parquet file or folder once read, from the footers: each column chunk's
    values times their width (its uncompressed size for other types, such as strings)."""
    total = 0
    for f in parquet_files(path):
        md = pq.ParquetFile(f).metadata
        for i in range(md.num_row_groups):
            for j in range(md.num_columns):
                col = md.row_group(i).column(j)
                width = WIDTHS.get(col.physical_type)
                total += col.num_values * width if width else col.total_uncompressed_size
    return total


def data_version(path: str | Path) -> str:
    """A short hash that changes when a Parquet dataset does: over every Parquet file under
    ``path`` (or the file itself), its path relative to ``path``, size and row count (read
    from the footer, so hashing a million products costs one footer read per shard)."""
    root = Path(path)
    files = parquet_files(root)
    digest = hashlib.sha256()
    for f in files:
        rel = f.name if f == root else f.relative_to(root).as_posix()
        digest.update(f"{rel}:{f.stat().st_size}:{pq.ParquetFile(f).metadata.num_rows};".encode())
    return digest.hexdigest()[:12]


REQUIRED_COLUMNS = ("product_id", "demand", "lead_time", *ECONOMICS)


def validate_products(path: str | Path, min_periods: int = 1, problem=None) -> dict[str, int]:
    """Check a Parquet file or folder of product rows before a job reads it; a problem is a
    ``DataError`` naming the file, the column and how many rows. Checked: files readable,
    the columns ``REQUIRED_COLUMNS`` present with numeric types (``demand`` a list), no
    NaN or infinite values, no negative demand, costs or lead times, a value every problem
    parameter column (``PARAMETERS``) allows (``docs/problems/<problem>.md``; with the job's
    ``problem``, a structural one no larger than its population constant), one row per
    ``product_id``, every history ``min_periods`` long or more and all of the same length.
    Files with no rows are skipped and counted. Returns the counts: files, empty files,
    products, periods."""
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
        lengths |= _check_columns(f, table, min_periods, problem)
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


def _check_columns(f: Path, table: pa.Table, min_periods: int, problem=None) -> set[int]:
    """The per-file checks of ``validate_products``; returns the history lengths seen."""

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
    for name in (c for c in table.column_names if c in PARAMETERS):
        _check_parameter(f, name, table.column(name), problem)
    return set(np.unique(sizes).tolist())


def _check_parameter(f: Path, name: str, column: pa.ChunkedArray, problem=None) -> None:
    """A problem parameter column: every value one its problem accepts as ``problem.params``."""
    if column.null_count:
        raise DataError(f"{f}: column {name}: {column.null_count} rows with no value (null)")
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind in "iuf" and not np.isfinite(values).all():
        raise DataError(f"{f}: column {name}: {int((~np.isfinite(values)).sum())} rows with NaN or infinite values")
    bad, reason = np.zeros(len(values), dtype=bool), ""
    for value in np.unique(values):
        try:
            PARAMETERS[name](**{name: value.item() if hasattr(value, "item") else value})
        except (TypeError, ValueError) as e:
            bad |= values == value
            reason = reason or str(e)
    if bad.any():
        raise DataError(f"{f}: column {name}: {int(bad.sum())} rows with values the problem refuses ({reason})")
    if problem is not None and name in problem.structural and (values > (top := getattr(problem, name))).any():
        raise DataError(f"{f}: column {name}: {int((values > top).sum())} rows with values above "
                        f"problem.params.{name} = {top}, the largest value (it sets the state's layout)")


def _check_values(f: Path, name: str, values: np.ndarray, row: np.ndarray, what: str) -> None:
    for bad, label in ((~np.isfinite(values), "NaN or infinite values"), (values < 0, what)):
        if bad.any():
            raise DataError(f"{f}: column {name}: {len(np.unique(row[bad]))} rows with {label}")
