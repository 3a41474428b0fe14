"""Runs of an MLflow experiment side by side (``python -m jobs.compare``): one column per
run, one row per tag and metric, the same names on every run (docs/mlflow.md)."""
from __future__ import annotations

import math

import pandas as pd

from pipeline.adapters.tracking import KIND_TAG, REVIEW_TAGS

STANDARD_METRICS = ("valid/best", "test/learned/avg_cost", "test/learned/avg_reward", "test/learned/gap_pct",
                    "test/learned/fill_rate", "test/learned/violation_rate_out", "test/learned/violation_rate_in",
                    "sweep/trials_finished", "wall_seconds")


def compare_table(runs, metrics: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """``runs``: MLflow ``Run`` objects, newest first. Rows: run id, kind, status, start,
    the review tags, then the metrics (``metrics``, or those of ``STANDARD_METRICS`` that
    any run has); columns: the run names."""
    metrics = list(metrics) or [m for m in STANDARD_METRICS if any(m in r.data.metrics for r in runs)]
    columns = {}
    for r in runs:
        name = r.info.run_name or r.info.run_id[:8]
        if name in columns:
            name = f"{name}@{r.info.run_id[:6]}"
        columns[name] = {"run_id": r.info.run_id[:12], "kind": r.data.tags.get(KIND_TAG, ""), "status": r.info.status,
                         "started": pd.Timestamp(r.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
                         **{t: r.data.tags.get(t, "") for t in REVIEW_TAGS},
                         **{m: _number(r.data.metrics.get(m)) for m in metrics}}
    return pd.DataFrame(columns, index=["run_id", "kind", "status", "started", *REVIEW_TAGS, *metrics])


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.4f}" if abs(value) < 1e6 else f"{value:,.0f}"
