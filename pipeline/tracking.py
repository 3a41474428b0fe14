"""MLflow adapter: one object owns tracking for a training job.

Each job is one MLflow run, found again by its run name so that a resumed job continues
the same run. The store defaults to a SQLite file in the project folder, always given as
an absolute URI (Ray Tune and Ray workers change the working directory).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.config import PROJECT_ROOT, Config, flatten, to_yaml

RUN_NAME_TAG = "sidbp.run_name"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by


def tracking_uri(cfg: Config) -> str:
    if cfg.mlflow.tracking_uri:
        uri = cfg.mlflow.tracking_uri
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = os.environ["MLFLOW_TRACKING_URI"]
    else:
        uri = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            uri = f"sqlite:///{(PROJECT_ROOT / path).resolve()}"
    return uri


class Tracker:
    """Opens (or reopens) the run of a job and logs to it."""

    def __init__(self, cfg: Config):
        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(self.uri)
        mlflow.set_tracking_uri(self.uri)
        exp = self.client.get_experiment_by_name(cfg.mlflow.experiment)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
            self.experiment_id = self.client.create_experiment(cfg.mlflow.experiment,
                                                               artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.run_id: str | None = None
        self.resumed = False

    def start(self, cfg: Config, parent_run_id: str | None = None, tags: dict[str, str] | None = None,
              resume: bool = True) -> str:
        """Reuse the latest run with this run name, else create one; log the config.

        ``parent_run_id``: nest the run under that run (a sweep's trial under the sweep) and
        reuse only a run nested there; ``tags``: extra tags; ``resume=False``: always a new run."""
        query = f"tags.`{RUN_NAME_TAG}` = '{cfg.name}'"
        if parent_run_id:
            query += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
        found = self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time DESC"],
                                        max_results=1) if resume else []
        extra = {k: str(v) for k, v in (tags or {}).items()}
        if found:
            self.run_id, self.resumed = found[0].info.run_id, True
            self.client.update_run(self.run_id, status="RUNNING")
            for k, v in extra.items():
                self.client.set_tag(self.run_id, k, v)
        else:
            run_tags = {RUN_NAME_TAG: cfg.name, "problem": cfg.problem.name, **extra}
            if parent_run_id:
                run_tags[PARENT_TAG] = parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=cfg.name, tags=run_tags)
            self.run_id = run.info.run_id
            params = flatten(cfg)
            items = list(params.items())
            for i in range(0, len(items), 90):
                for k, v in items[i:i + 90]:
                    self.client.log_param(self.run_id, k, v[:6000])
        self.log_text(to_yaml(cfg), "config.yaml")
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        log_metrics(self.client, self.run_id, metrics, step)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_table(self, table: pd.DataFrame, name: str) -> None:
        """As a CSV artifact and as an MLflow table (shown in the run's Evaluation view)."""
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / f"{name}.csv"
            table.to_csv(path, index=False)
            self.log_artifact(path)
        self.client.log_table(self.run_id, table, f"{name}.json")

    def log_figure(self, fig, name: str) -> None:
        self.client.log_figure(self.run_id, fig, name)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def run_url(self) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int | None) -> None:
    import time
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i:i + 500])


class EpochLogger:
    """What a Ray Train worker (rank 0) uses to log per-epoch metrics to the job's run."""

    def __init__(self, uri: str, run_id: str):
        self.client, self.run_id = MlflowClient(uri), run_id

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        log_metrics(self.client, self.run_id, metrics, step)
