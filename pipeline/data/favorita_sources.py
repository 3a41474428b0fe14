"""Corporacion Favorita demand into the series layout (``pipeline.data.series``): the raw Kaggle
files (``convert_raw``, a two-stage Ray Data job) and the weekly long table (``convert_weekly_sales``,
``long_sales_to_series``). The stages, repair rules and manifest counts: docs/favorita.md, Ingestion.
"""
from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pipeline.data.calendar import period_days
from pipeline.data.parquet import parquet_files
from pipeline.errors import DataError
from pipeline.data.series import series_table, write_manifest

TRAIN_TYPES = {"id": pa.int64(), "date": pa.date32(), "store_nbr": pa.int32(), "item_nbr": pa.int32(),
               "unit_sales": pa.string(), "onpromotion": pa.bool_()}  # unit_sales parsed by us: exact error counts
STATIC_TYPES = {
    "items.csv": {"item_nbr": pa.int32(), "family": pa.string(), "perishable": pa.int8()},
    "stores.csv": {"store_nbr": pa.int32(), "city": pa.string(), "state": pa.string()},
    "holidays_events.csv": {"date": pa.date32(), "type": pa.string(), "locale": pa.string(),
                            "locale_name": pa.string(), "transferred": pa.bool_()},
}
READ_BLOCK_BYTES = 8 << 20  # with one parsing thread: the reader holds a few blocks, not dozens
ROWS_PER_BATCH = 1_000_000
NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------- inputs

def header(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [c.strip().strip('"') for c in f.readline().rstrip("\r\n").split(",")]


def check_raw(raw_dir) -> Path:
    """The raw folder, after checking that every file is there with every column we read."""
    raw = Path(raw_dir).expanduser()
    if not raw.is_dir():
        raise FileNotFoundError(f"raw Favorita folder {raw} does not exist")
    needed = {"train.csv": TRAIN_TYPES, **STATIC_TYPES}
    for name in needed:
        if not (raw / name).is_file():
            raise FileNotFoundError(f"{raw / name} is missing (the raw Favorita folder needs {', '.join(needed)})")
    for name, columns in needed.items():
        found = header(raw / name)
        missing = [c for c in columns if c not in found]
        if missing:
            raise DataError(f"{raw / name}: no column {', '.join(missing)} (header: {','.join(found)})")
    return raw


def read_static(path: Path) -> pa.Table:
    types = STATIC_TYPES[path.name]
    try:
        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types,
                                                                       include_columns=list(types)))
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: {str(e).splitlines()[0]}") from None


def train_csv_options() -> dict:
    return {"read_options": pcsv.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False),
            "convert_options": pcsv.ConvertOptions(column_types=TRAIN_TYPES, include_columns=list(TRAIN_TYPES),
                                                   strings_can_be_null=True)}


def csv_problem(path: Path) -> str:
    """The first line of pyarrow's complaint about ``path`` (train.csv) read with our
    options, found by streaming it here (Ray's read error does not carry it)."""
    try:
        for _ in pcsv.open_csv(path, **train_csv_options()):
            pass
    except pa.ArrowInvalid as e:
        return str(e).splitlines()[0]
    return "unreadable with the Kaggle schema"


def series_key(store: np.ndarray, item: np.ndarray) -> np.ndarray:
    """One int64 per (store, item), ordered by store then item."""
    return (store.astype(np.int64) << 32) | item.astype(np.int64).astype(np.uint32)


def bucket_of(key: np.ndarray, buckets: int) -> np.ndarray:
    """A fixed hash of the series key (Fibonacci hashing), the same in every process."""
    mixed = key.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(33)) % np.uint64(buckets)).astype(np.int32)


def parse_sales(text: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, int, int]:
    """``unit_sales`` text -> float64 (null where empty, NaN or infinite), the number of
    values that are not numbers, and the index of the first of them (-1 if none)."""
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    try:
        values = pc.cast(text, pa.float64())
        bad, first = 0, -1
    except pa.ArrowInvalid:
        number = pc.fill_null(pc.match_substring_regex(text, NUMBER), True)
        bad = len(text) - pc.sum(number.cast(pa.int64())).as_py()
        first = int(np.flatnonzero(~number.to_numpy(zero_copy_only=False))[0])
        values = pc.cast(pc.if_else(number, text, pa.scalar(None, pa.string())), pa.float64())
    finite = pc.fill_null(pc.is_finite(values), False)
    return pc.if_else(finite, values, pa.scalar(None, pa.float64())), bad, first


# ------------------------------------------------------------------- stage 1: rows -> buckets

def bucket_rows(batch: pa.Table, staging: str, buckets: int, start_day: int | None) -> pa.Table:
    """Stage 1 on one batch of train.csv: write its valid rows to their buckets' folders;
    return one summary row (counts, first/last day, distinct series keys)."""
    sales, bad, first_bad = parse_sales(batch["unit_sales"])
    valid = pc.is_valid(sales).to_numpy(zero_copy_only=False)
    missing = int(len(valid) - valid.sum() - bad)
    keyed = np.logical_and.reduce([pc.is_valid(batch[c]).to_numpy() for c in ("date", "store_nbr", "item_nbr")])
    no_key = int((valid & ~keyed).sum())
    valid &= keyed
    day = pc.fill_null(batch["date"].combine_chunks().cast(pa.int32()), 0).to_numpy()
    early = valid & (day < start_day) if start_day is not None else np.zeros(len(valid), bool)
    before = int(early.sum())
    valid &= ~early
    rows = batch.set_column(batch.schema.get_field_index("unit_sales"), "unit_sales", sales).filter(pa.array(valid))
    day = day[valid]
    key = series_key(rows["store_nbr"].to_numpy(), rows["item_nbr"].to_numpy())
    bucket = bucket_of(key, buckets)
    order = np.argsort(bucket, kind="stable")
    rows, bucket = rows.combine_chunks().take(pa.array(order)), bucket[order]
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))  # each bucket's first row
    name = f"{uuid.uuid4().hex}.parquet"
    for lo, hi in zip(starts, np.r_[starts[1:], len(bucket)]):
        folder = Path(staging) / f"bucket={bucket[lo]}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows.slice(lo, hi - lo), folder / name)
    return pa.table({
        "rows": [batch.num_rows], "missing_sales_rows": [missing], "missing_key_rows": [no_key],
        "rows_before_start": [before], "bad_sales_rows": [bad],
        "bad_sales_example": [f"id {batch['id'][first_bad]}: {batch['unit_sales'][first_bad].as_py()!r}" if bad else ""],
        "first_day": [int(day.min()) if len(day) else np.iinfo(np.int32).max],
        "last_day": [int(day.max()) if len(day) else np.iinfo(np.int32).min],
        "keys": pa.array([np.unique(key)], pa.list_(pa.int64())),
    })


# ----------------------------------------------------------------- stage 2: bucket -> series

@dataclass(frozen=True)
class Layout:
    """What every stage-2 task needs, small: the periods, every series key (sorted), and
    the static tables as arrays."""
    start_day: int                # days since 1970-01-01 of period 0's first day
    frequency: str
    periods: int
    buckets: int
    keys: np.ndarray              # int64 [S], sorted: product_id = position
    item_nbr: np.ndarray          # items.csv, sorted by item_nbr
    perishable: np.ndarray
    family: np.ndarray
    store_nbr: np.ndarray         # stores.csv, sorted
    holiday: np.ndarray           # float32 [stores + 1, periods]; the last row: national only

    @property
    def start_date(self) -> np.datetime64:
        return np.datetime64(self.start_day, "D")


def lookup(sorted_values: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``wanted`` in ``sorted_values`` and whether each was found."""
    pos = np.clip(np.searchsorted(sorted_values, wanted), 0, max(len(sorted_values) - 1, 0))
    found = sorted_values[pos] == wanted if len(sorted_values) else np.zeros(len(wanted), bool)
    return pos, found


def bucket_series(rows: pa.Table, layout: Layout, bucket: int) -> tuple[pa.Table, dict[str, float]]:
    """Stage 2 for one bucket's rows (train.csv columns, unit_sales parsed): the repaired
    series x periods table and the repair counts."""
    ids = np.flatnonzero(bucket_of(layout.keys, layout.buckets) == bucket)
    keys, n, step = layout.keys[ids], layout.periods, period_days(layout.frequency)
    key = series_key(rows["store_nbr"].to_numpy(), rows["item_nbr"].to_numpy())
    day = rows["date"].combine_chunks().cast(pa.int32()).to_numpy() - layout.start_day
    row_id = rows["id"].to_numpy()
    sales = rows["unit_sales"].to_numpy()
    promo = rows["onpromotion"].combine_chunks()
    promo_missing = promo.is_null().to_numpy(zero_copy_only=False)
    promo = pc.fill_null(promo, False).to_numpy(zero_copy_only=False)

    inside = day < n * step
    order = np.lexsort((-row_id[inside], day[inside], key[inside]))
    key, day, sales, promo, promo_missing = (a[inside][order] for a in (key, day, sales, promo, promo_missing))
    first = np.ones(len(key), bool)
    first[1:] = (key[1:] != key[:-1]) | (day[1:] != day[:-1])
    key, day, sales, promo, promo_missing = (a[first] for a in (key, day, sales, promo, promo_missing))
    returns = sales < 0

    row_series = np.searchsorted(keys, key)
    period = day // step
    cell = row_series * n + period
    s = len(keys)
    demand = np.bincount(cell, weights=np.maximum(sales, 0.0), minlength=s * n).reshape(s, n)
    promo_share = np.bincount(cell, weights=promo, minlength=s * n).reshape(s, n) / step
    first_period = np.full(s, n, np.int32)
    starts = np.r_[0, np.flatnonzero(key[1:] != key[:-1]) + 1] if len(key) else np.zeros(0, np.int64)
    first_period[row_series[starts]] = period[starts]

    store, item = (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32)  # series_key undone
    item_pos, item_known = lookup(layout.item_nbr, item)
    store_pos, store_known = lookup(layout.store_nbr, store)
    table = series_table(
        demand, str(layout.start_date), layout.frequency, ids,
        series_id=[f"s{a}-i{b}" for a, b in zip(store, item)], store=store, item=item,
        perishable=np.where(item_known, layout.perishable[item_pos], 0),
        features={"promo": promo_share,
                  "holiday": layout.holiday[np.where(store_known, store_pos, len(layout.store_nbr))]})
    table = table.append_column("first_period", pa.array(first_period)).append_column(
        "family", pa.array(np.where(item_known, layout.family[item_pos], ""), pa.string()))
    counts = {"rows_after_end": int((~inside).sum()), "duplicate_rows": int(inside.sum() - len(key)),
              "negative_rows": int(returns.sum()), "negative_units": float(-sales[returns].sum()),
              "promo_missing_rows": int(promo_missing.sum()),
              "series_unknown_store": int((~store_known).sum()), "series_unknown_item": int((~item_known).sum())}
    return table, counts


BUCKET_COUNTS = ("rows_after_end", "duplicate_rows", "negative_rows", "negative_units", "promo_missing_rows",
                 "series_unknown_store", "series_unknown_item")


def convert_buckets(batch: dict[str, np.ndarray], staging: str, out_dir: str, layout: Layout) -> pa.Table:
    """Stage 2 task: read, convert and write each bucket of ``batch["bucket"]``; return
    its counts. A bucket without staged rows holds no series."""
    summaries = []
    for bucket in batch["bucket"].tolist():
        folder = Path(staging) / f"bucket={bucket}"
        series, counts = 0, {**dict.fromkeys(BUCKET_COUNTS, 0), "negative_units": 0.0}
        if folder.exists():
            table, counts = bucket_series(pq.read_table(folder), layout, bucket)
            pq.write_table(table, Path(out_dir) / f"part-{bucket:05d}.parquet")
            series = table.num_rows
        summaries.append({"bucket": bucket, "series": series, **counts})
    return pa.Table.from_pylist(summaries)


def holiday_matrix(holidays: pa.Table, stores: pa.Table, start_day: int, periods: int,
                   frequency: str) -> tuple[np.ndarray, np.ndarray]:
    """Store numbers (sorted) and, per store and period, the days that are a holiday there
    ([stores + 1, periods]; the last row, for stores not in stores.csv: national only)."""
    step = period_days(frequency)
    stores = stores.sort_by("store_nbr")
    kept = pc.and_(pc.not_equal(holidays["type"], "Work Day"), pc.invert(pc.fill_null(holidays["transferred"], False)))
    h = holidays.filter(pc.fill_null(kept, False))
    day = h["date"].cast(pa.int32()).to_numpy() - start_day
    inside = (day >= 0) & (day < periods * step)
    locale = h["locale"].to_numpy(zero_copy_only=False)[inside]
    name = h["locale_name"].to_numpy(zero_copy_only=False)[inside]
    day = day[inside]
    flags = np.zeros((stores.num_rows + 1, periods * step), bool)
    flags[:, day[locale == "National"]] = True
    for kind, column in (("Regional", "state"), ("Local", "city")):
        rows = locale == kind
        at_store, holiday = np.nonzero(stores[column].to_numpy(zero_copy_only=False)[:, None] == name[rows][None, :])
        flags[at_store, day[rows][holiday]] = True
    matrix = flags.reshape(len(flags), periods, step).sum(axis=2).astype(np.float32)
    return stores["store_nbr"].to_numpy(), matrix


# ------------------------------------------------------------------------------ the job

def to_day(date) -> int:
    return int(np.datetime64(str(date), "D").astype(np.int64))


def clear_output(out: Path) -> None:
    """Remove what an earlier conversion wrote to ``out`` (its part files and manifest)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("part-*.parquet"), out / "manifest.json"]:
        old.unlink(missing_ok=True)


def convert_raw(raw_dir, out_dir, frequency: str = "weekly", buckets: int = 64, start_date=None,
                progress: Progress = print) -> dict:
    """The raw Kaggle files of ``raw_dir`` -> the series layout in ``out_dir`` (one
    ``part-<bucket>.parquet`` per non-empty bucket, and ``manifest.json``); returns the
    manifest. Runs on the current Ray (Ray Data starts a local one if none)."""
    import ray

    step = period_days(frequency)
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    raw = check_raw(raw_dir)
    train = raw / "train.csv"
    items = read_static(raw / "items.csv").sort_by("item_nbr")
    stores, holidays = read_static(raw / "stores.csv"), read_static(raw / "holidays_events.csv")
    out = Path(out_dir)
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    clear_output(out)
    started = time.time()
    try:
        rows = ray.data.read_csv(str(train), **train_csv_options())
        summaries = rows.map_batches(bucket_rows, batch_size=ROWS_PER_BATCH, batch_format="pyarrow",
                                     fn_kwargs={"staging": str(staging), "buckets": buckets,
                                                "start_day": None if start_date is None else to_day(start_date)})
        read = {"rows": 0, "missing_sales_rows": 0, "missing_key_rows": 0, "rows_before_start": 0, "bad_sales_rows": 0}
        first_day, last_day, keys, example = np.iinfo(np.int32).max, np.iinfo(np.int32).min, np.zeros(0, np.int64), ""
        try:
            for summary in summaries.iter_batches(batch_size=None, batch_format="pyarrow"):
                for k in read:
                    read[k] += pc.sum(summary[k]).as_py()
                first_day = min(first_day, pc.min(summary["first_day"]).as_py())
                last_day = max(last_day, pc.max(summary["last_day"]).as_py())
                keys = np.union1d(keys, pc.list_flatten(summary["keys"]).to_numpy())
                example = example or next((e for e in summary["bad_sales_example"].to_pylist() if e), "")
                progress(f"[ingest] stage 1: {read['rows']:,} rows read, {len(keys):,} series "
                         f"({read['rows'] / (time.time() - started):,.0f} rows/s)")
        except ray.exceptions.RayTaskError as e:
            if "Failed to read CSV file" not in str(e.cause):
                raise
            raise DataError(f"{train}: {csv_problem(train)}") from None
        if read["bad_sales_rows"]:
            raise DataError(f"{train}: column unit_sales has {read['bad_sales_rows']:,} value(s) that are not "
                            f"numbers (first: {example})")
        if not len(keys):
            raise DataError(f"{train}: no row with a unit_sales value" +
                            (f" on or after {start_date}" if start_date is not None else ""))
        start_day = first_day if start_date is None else to_day(start_date)
        periods = (last_day - start_day + 1) // step
        if periods < 1:
            raise DataError(f"{train}: the dates from {np.datetime64(start_day, 'D')} to "
                            f"{np.datetime64(last_day, 'D')} do not fill one {frequency} period")
        store_nbr, holiday = holiday_matrix(holidays, stores, start_day, periods, frequency)
        layout = Layout(start_day=start_day, frequency=frequency, periods=periods, buckets=buckets, keys=keys,
                        item_nbr=items["item_nbr"].to_numpy(), perishable=items["perishable"].to_numpy(),
                        family=items["family"].to_numpy(zero_copy_only=False), store_nbr=store_nbr,
                        holiday=holiday)
        stage_two = time.time()
        converted = ray.data.from_items([{"bucket": b} for b in range(buckets)], override_num_blocks=buckets)
        converted = converted.map_batches(convert_buckets, batch_size=1, batch_format="numpy",
                                          fn_kwargs={"staging": str(staging), "out_dir": str(out), "layout": layout})
        fixed = dict.fromkeys(("series", *BUCKET_COUNTS), 0)
        done = 0
        for summary in converted.iter_batches(batch_size=None, batch_format="pyarrow"):
            for k in fixed:
                fixed[k] += pc.sum(summary[k]).as_py()
            done += summary.num_rows
            progress(f"[ingest] stage 2: {done}/{buckets} buckets, {fixed['series']:,} series "
                     f"({fixed['series'] / (time.time() - stage_two):,.0f} series/s)")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    end_day = start_day + periods * step - 1
    info = {"source": "favorita", "input": str(raw), "frequency": frequency,
            "start_date": str(np.datetime64(start_day, "D")), "end_date": str(np.datetime64(end_day, "D")),
            "last_date_in_file": str(np.datetime64(last_day, "D")), "periods": periods,
            "series": int(fixed.pop("series")), "buckets": buckets, "rows_read": read["rows"],
            **{k: read[k] for k in ("missing_sales_rows", "missing_key_rows", "rows_before_start")},
            **{k: (round(float(v), 6) if k == "negative_units" else int(v)) for k, v in fixed.items()},
            "seconds": round(time.time() - started, 1)}
    write_manifest(out, **info)
    return info


# ------------------------------------------------------------------ the weekly long table

LONG_COLUMNS = ("series_id", "store", "item", "week", "units")
SHARD_SERIES = 50_000


def long_sales_to_series(table: pa.Table) -> tuple[pa.Table, dict]:
    """``series_id, store, item, week, units`` (one row per series and week) -> the series
    layout (weekly, period 0 = the first week) and the repair counts. Rules: rows with
    empty/NaN units dropped (``missing_rows``); duplicate (series_id, week) rows: the last
    in table order kept (``duplicate_rows`` removed); negative weeks clipped to 0
    (``negative_rows``, ``negative_units``); weeks without a row are zero
    (``filled_gaps``). ``product_id`` follows the sorted ``series_id``."""
    missing = [c for c in LONG_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"no column {', '.join(missing)} (expected {', '.join(LONG_COLUMNS)})")
    units = table["units"].cast(pa.float64()).to_numpy()  # null -> NaN
    kept = np.isfinite(units)
    table, units = table.filter(pa.array(kept)), units[kept]
    if not table.num_rows:
        raise DataError("no row with a units value")
    day = table["week"].cast(pa.date32()).cast(pa.int32()).to_numpy()
    start = int(day.min())
    off_grid = (day - start) % 7 != 0
    if off_grid.any():
        raise DataError(f"week {np.datetime64(int(day[off_grid][0]), 'D')} is not a whole number of weeks after "
                        f"the first week {np.datetime64(start, 'D')}")
    period = (day - start) // 7
    periods = int(period.max()) + 1
    sid = table["series_id"].cast(pa.string())
    names = pc.unique(sid)
    names = names.take(pc.sort_indices(names))
    series = pc.index_in(sid, value_set=names).to_numpy()
    s = len(names)

    cell = series.astype(np.int64) * periods + period
    order = np.lexsort((np.arange(len(cell)), cell))
    last = np.r_[cell[order][1:] != cell[order][:-1], True]
    keep = order[last]  # sorted by cell: by series, then week
    cell, values = cell[keep], units[keep]
    returns = values < 0
    demand = np.zeros(s * periods)
    demand[cell] = np.maximum(values, 0.0)
    store, item = np.zeros(s, np.int32), np.zeros(s, np.int32)
    store[series[keep]] = table["store"].to_numpy()[keep]
    item[series[keep]] = table["item"].to_numpy()[keep]
    first_period = np.full(s, periods, np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(series[keep])) + 1]
    first_period[series[keep][starts]] = period[keep][starts]

    out = series_table(demand.reshape(s, periods), str(np.datetime64(start, "D")), "weekly", np.arange(s),
                       series_id=names.to_numpy(zero_copy_only=False), store=store, item=item)
    out = out.append_column("first_period", pa.array(first_period))
    counts = {"start_date": str(np.datetime64(start, "D")), "periods": periods, "series": s,
              "rows_read": len(kept), "missing_rows": int((~kept).sum()),
              "duplicate_rows": int(len(order) - len(keep)), "negative_rows": int(returns.sum()),
              "negative_units": round(float(-values[returns].sum()), 6), "filled_gaps": int(s * periods - len(cell))}
    return out, counts


def convert_weekly_sales(path, out_dir) -> dict:
    """A Parquet file, or a folder of them, in the long weekly schema -> the series layout
    in ``out_dir`` (``part-<n>.parquet`` of up to 50,000 series, ``manifest.json``);
    returns the manifest."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"weekly sales Parquet {path} does not exist")
    files = parquet_files(path)
    if not files:
        raise FileNotFoundError(f"no *.parquet file in {path}")
    for f in files:
        names = pq.read_schema(f).names
        missing = [c for c in LONG_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{f}: no column {', '.join(missing)} (expected {', '.join(LONG_COLUMNS)})")
    table = pa.concat_tables([pq.read_table(f, columns=list(LONG_COLUMNS)) for f in files], promote_options="permissive")
    try:
        series, counts = long_sales_to_series(table)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    out = Path(out_dir)
    clear_output(out)
    for n, first in enumerate(range(0, series.num_rows, SHARD_SERIES)):
        pq.write_table(series.slice(first, SHARD_SERIES), out / f"part-{n:05d}.parquet")
    info = {"source": "favorita_weekly", "input": str(path), "frequency": "weekly", **counts}
    write_manifest(out, **info)
    return info
