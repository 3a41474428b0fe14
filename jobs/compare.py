"""Runs of an MLflow experiment side by side.

    python -m jobs.compare mlflow_experiment=NAME [compare.runs=6] [compare.kind=train]
        [compare.metrics=[valid/best,test/learned/gap_pct]] [mlflow.tracking_uri=URI]

One column per run (newest first), one row per review tag (problem, instance, policy kind,
penalty weights, data version, git commit) and metric (by default those of
``pipeline.adapters.run_comparison.STANDARD_METRICS`` that any of the runs has). ``mlflow_experiment=`` is
short for ``mlflow.experiment=``.
"""
from __future__ import annotations

from jobs import _cli
from pipeline.config import ConfigError, load_config
from pipeline.reporting import logs


def main(args: list[str]) -> int:
    args = [("mlflow.experiment=" + a.split("=", 1)[1]) if a.startswith("mlflow_experiment=") else a for a in args]
    cfg = load_config(args)
    from mlflow.tracking import MlflowClient

    from pipeline.adapters.run_comparison import compare_table
    from pipeline.adapters.tracking import KIND_TAG, tracking_uri

    uri = tracking_uri(cfg)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"mlflow_experiment {cfg.mlflow.experiment!r} not found at {uri}; "
                          f"known: {', '.join(known) or 'none'}")
    c = cfg.compare
    query = f"tags.`{KIND_TAG}` = '{c.kind}'" if c.kind else ""
    runs = client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=c.runs)
    if not runs:
        logs.get("").info(f"No runs in experiment {cfg.mlflow.experiment!r}{f' of kind {c.kind}' if c.kind else ''} at {uri}")
        return 0
    table = compare_table(runs, list(c.metrics))
    logs.get("").info(f"Experiment {cfg.mlflow.experiment!r} at {uri}: the newest {len(runs)} run(s)"
                      f"{f' of kind {c.kind}' if c.kind else ''}\n\n{table.to_string()}")
    return 0


if __name__ == "__main__":
    _cli.run("compare", main)
