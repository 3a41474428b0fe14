"""Write product histories in the series layout (``pipeline/data/series.py``) as Parquet.

    python -m jobs.prepare_data source=favorita input=<raw folder> [frequency=weekly|daily] [buckets=64] [output=...]
    python -m jobs.prepare_data source=favorita_weekly input=<sales Parquet file or folder> [output=...]
    python -m jobs.prepare_data source=synthetic_retail [retail.num_series=100000] [frequency=daily] [seed=1]

``source``, ``input``, ``output``, ``frequency`` and ``buckets`` are short for
``prepare.<key>``; any other ``key=value`` goes to the config (``retail.*``, ``seed``,
``ray.address``, ...). Relative paths are taken from the project folder. The output folder
(default ``<output_dir>/data/<source>-<frequency>``) gets ``part-*.parquet`` files and a
``manifest.json`` with the counts printed at the end.

- ``favorita``: the raw Kaggle files (train.csv, items.csv, stores.csv,
  holidays_events.csv), converted by a Ray Data job (``pipeline.data.favorita_sources.convert_raw``),
  on ``ray.address`` / ``$RAY_ADDRESS`` or a local Ray with one CPU per core.
- ``favorita_weekly``: ``series_id, store, item, week, units`` Parquet, such as
  ``shared/data/favorita_weekly/sales.parquet`` (weekly only).
- ``synthetic_retail``: ``retail.num_series`` series of ``pipeline.data.retail`` at
  ``frequency`` (``retail.frequency`` is replaced by it), written 50,000 series a file.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from jobs import _cli
from pipeline.config import Config, ConfigError, load_config, resolve_path
from pipeline.reporting import logs

SHORT_KEYS = ("source", "input", "output", "frequency", "buckets")
RETAIL_CHUNK = 50_000


def config_args(args: list[str]) -> list[str]:
    """``source=...`` -> ``prepare.source=...`` (and the other short keys); the rest as is."""
    return [f"prepare.{a}" if a.split("=", 1)[0] in SHORT_KEYS else a for a in args]


def check(cfg: Config) -> None:
    """What ``load_config`` cannot check alone: the input each source needs."""
    p = cfg.prepare
    if p.source != "synthetic_retail" and not p.input:
        raise ConfigError(f"source={p.source} needs input=<path> (prepare.input)")
    if p.source == "favorita_weekly" and p.frequency != "weekly":
        raise ConfigError(f"source=favorita_weekly is weekly data; got frequency={p.frequency}")


def write_synthetic_retail(cfg: Config, out: Path) -> dict:
    """The synthetic retail population, ``RETAIL_CHUNK`` series per Parquet file."""
    import pyarrow.parquet as pq

    from pipeline.data.favorita_sources import clear_output
    from pipeline.data.retail import synthetic_retail, validate_retail
    from pipeline.data.series import write_manifest

    retail = replace(cfg.retail, frequency=cfg.prepare.frequency)
    try:
        validate_retail(retail)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    clear_output(out)
    started = time.time()
    for n, first in enumerate(range(0, retail.num_series, RETAIL_CHUNK)):
        count = min(RETAIL_CHUNK, retail.num_series - first)
        pq.write_table(synthetic_retail(retail, cfg.seed, first, count), out / f"part-{n:05d}.parquet")
        done = first + count
        logs.get("retail").info(f"{done:,}/{retail.num_series:,} series "
                                f"({done / (time.time() - started):,.0f} series/s)")
    info = {"source": "synthetic_retail", "frequency": retail.frequency, "start_date": retail.start_date,
            "periods": retail.periods, "series": retail.num_series, "seed": cfg.seed}
    write_manifest(out, **info)
    return info


def main(args: list[str]) -> int:
    cfg = load_config(config_args(args))
    check(cfg)
    from pipeline.data.favorita_sources import check_raw, convert_raw, convert_weekly_sales

    p = cfg.prepare
    out = resolve_path(p.output) if p.output else resolve_path(cfg.output_dir) / "data" / f"{p.source}-{p.frequency}"
    started = time.time()
    plain = logs.get("")
    logs.get("prepare").info(f"{p.source} ({p.frequency}) -> {out}")
    if p.source == "favorita":
        raw = check_raw(resolve_path(p.input))  # before starting Ray
        from pipeline.adapters.ray_session import init_ray

        init_ray(cfg, num_cpus=os.cpu_count())
        info = convert_raw(raw, out, p.frequency, p.buckets, progress=plain.info)
    elif p.source == "favorita_weekly":
        info = convert_weekly_sales(resolve_path(p.input), out)
    else:
        info = write_synthetic_retail(cfg, out)
    width = max(len(k) for k in info)
    plain.info("\n".join(f"  {k:<{width}}  {v:,}" if isinstance(v, (int, float)) else f"  {k:<{width}}  {v}"
                         for k, v in info.items()))
    plain.info(f"Output:    {out}")
    plain.info(f"Wall time: {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    _cli.run("prepare_data", main)
