"""DirectBackprop against predict-then-optimize on retail demand (the paper's Section 3.3).

Every series is in every split; the split is in time (``favorita.*``):

- training: periods ``[0, train_end)``. DirectBackprop's rollouts and the forecaster's
  fit only see these.
- validation: periods ``[train_end, valid_end)`` are scored, to pick DirectBackprop's
  checkpoint.
- test: periods ``[valid_end, test_end)`` are scored and reported.

A scored range is preceded in its split folder by ``history`` periods that the policies
see but are not scored on (the CNN's window, the forecaster's encoder, the demand
scale), then ``warmup`` periods run from an empty system and are not scored either, so
that every policy is scored on exactly the same weeks.

The economics are lost sales with the revenue objective: a unit sold earns ``price``,
each unit ordered costs ``unit_cost``, each unit left at the end of a period costs
``holding_cost``, and unmet demand is lost (no goodwill cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.core.batch import FEATURE_PREFIX, ProductBatch
from pipeline.data.parquet import parquet_files, write_shards
from pipeline.core.rollout import rollout
from pipeline.data.series import list_column, matrix, read_series

SHARED_WEEKLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "favorita_weekly" / "sales.parquet"
SUMMARY_COLUMNS = ["policy", "lead_time", "reward", "avg_inventory", "fill_rate"]


@dataclass(frozen=True)
class TimeSplit:
    train_end: int
    valid_end: int
    test_end: int
    history: int  # periods before a scored range that the policies see, unscored
    warmup: int   # periods from an empty system, unscored

    def window(self, split: str) -> tuple[int, int]:
        """The periods ``[first, stop)`` of a split's folder."""
        if split == "train":
            return 0, self.train_end
        scored = self.train_end if split == "valid" else self.valid_end
        stop = self.valid_end if split == "valid" else self.test_end
        return scored - self.warmup - self.history, stop

    def check(self, periods: int) -> None:
        if self.test_end > periods:
            raise ValueError(f"favorita.test_end={self.test_end} is past the {periods} periods of the data")
        if self.train_end - self.warmup - self.history < 0:
            raise ValueError(f"favorita.train_end={self.train_end} leaves no room for {self.history} periods "
                             f"of history and {self.warmup} of warm-up before validation")


def load_series(fcfg, retail_cfg, seed: int) -> tuple[pa.Table, dict]:
    """The series layout of ``data_path`` when set, else of the configured source, and
    what was repaired on the way."""
    if fcfg.source == "synthetic" and not fcfg.data_path:
        from pipeline.data.retail import synthetic_retail

        return synthetic_retail(retail_cfg, seed), {"source": "synthetic retail (retail.*)"}
    path = Path(fcfg.data_path).expanduser() if fcfg.data_path else SHARED_WEEKLY
    if not path.exists():
        raise FileNotFoundError(f"favorita.data_path: no Parquet data at {path}")
    files = parquet_files(path)
    if not files:
        raise FileNotFoundError(f"favorita.data_path: no *.parquet files under {path}")
    names = pq.read_schema(files[0]).names
    if "demand" in names:
        return read_series(path), {"source": str(path)}
    from pipeline.data.favorita_sources import long_sales_to_series

    table, counts = long_sales_to_series(pq.ParquetDataset([str(f) for f in files]).read())
    return table, {"source": str(path), **counts}


def training_table(series: pa.Table, first: int, stop: int, lead_time: int, fcfg) -> pa.Table:
    """Periods ``[first, stop)`` of every series in the training layout of
    ``pipeline.data`` (the economics from the config; no ground-truth distribution)."""
    n = series.num_rows
    demand = matrix(series, "demand")[:, first:stop]
    cols = {"product_id": series.column("product_id"), "demand": list_column(demand)}
    for name in series.column_names:
        if name.startswith(FEATURE_PREFIX):
            cols[name] = list_column(matrix(series, name)[:, first:stop])
    cols.update({
        "holding_cost": pa.array(np.full(n, fcfg.holding_cost)), "shortage_cost": pa.array(np.zeros(n)),
        "unit_cost": pa.array(np.full(n, fcfg.unit_cost)), "price": pa.array(np.full(n, fcfg.price)),
        "lead_time": pa.array(np.full(n, lead_time, dtype=np.int64)),
        "true_dist": pa.array(["unknown"] * n), "true_mean": pa.array(demand.mean(axis=1).astype(np.float64)),
        "true_shape": pa.array(np.zeros(n)),
    })
    return pa.table(cols)


def write_splits(series: pa.Table, split: TimeSplit, lead_time: int, fcfg, folder: Path,
                 shard_rows: int) -> dict[str, Path]:
    """train/ valid/ test/ folders for ``jobs.train`` (``data.path``)."""
    out = {}
    for name in ("train", "valid", "test"):
        first, stop = split.window(name)
        target = folder / name
        for old in target.glob("*.parquet"):
            old.unlink()
        write_shards(training_table(series, first, stop, lead_time, fcfg), target, shard_rows)
        out[name] = target
    return out


@torch.no_grad()
def score(problem, policies: dict, batch: ProductBatch, split: TimeSplit, width: int, lead_time: int,
          dates: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every policy on the same test paths, whole-unit orders. Returns the summary (one
    row per policy: total reward, average on-hand inventory per series and period, fill
    rate), the per-period aggregates, and each policy's trajectory (for plots)."""
    start = split.history
    horizon = batch.periods - start
    rows, weekly, trajectories = [], [], {}
    for name, policy in policies.items():
        traj = rollout(problem, policy, batch, start, horizon, width, round_actions=True)
        w = slice(split.warmup, None)
        reward = batch.price[:, None] * traj.sales[:, w] - traj.cost[:, w]
        rows.append({"policy": name, "lead_time": lead_time, "reward": float(reward.sum()),
                     "avg_inventory": float(traj.held[:, w].mean()),
                     "fill_rate": float(traj.sales[:, w].sum() / traj.demand[:, w].sum().clamp_min(1e-9))})
        weekly.append(pd.DataFrame({
            "policy": name, "lead_time": lead_time, "period": np.arange(split.valid_end, split.test_end),
            "date": dates[split.valid_end:split.test_end],
            "demand": traj.demand[:, w].sum(0).numpy(), "sales": traj.sales[:, w].sum(0).numpy(),
            "orders": traj.orders[:, w].sum(0).numpy(), "inventory": traj.held[:, w].sum(0).numpy(),
            "reward": reward.sum(0).numpy()}))
        trajectories[name] = traj
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.concat(weekly, ignore_index=True), trajectories
