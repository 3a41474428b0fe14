"""MLflow adapter: one object owns tracking for a training job.

Each job is one MLflow run, found again by its run name so that a resumed job continues
the same run. The store defaults to a SQLite file in the project folder, always given as
an absolute URI (Ray Tune and Ray workers change the working directory).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline.config import PROJECT_ROOT, Config, flatten, to_yaml
from pipeline.errors import TrackingUnavailable
from pipeline.reporting import logs
from pipeline.data.parquet import data_version

# MLflow's notes on creating a new SQLite store's tables are not the job's output
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)

RUN_NAME_TAG = "sidbp.run_name"
KIND_TAG = "sidbp.kind"            # train, evaluate, sweep, trial, favorita, benchmark, sipn
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
NOTE_TAG = "mlflow.note.content"   # the run's description in the MLflow UI
# on every run (docs/mlflow.md): what a reviewer filters and groups by
REVIEW_TAGS = ("problem", "instance", "policy_kind", "penalty_weights", "data_version", "git_commit")
PARAM_LENGTH = 6000  # the longest param value MLflow keeps


def git_commit() -> str:
    """The project's commit (``-dirty`` with uncommitted changes to tracked files);
    ``$SIDBP_GIT_COMMIT`` where the project was shipped without ``.git`` (a Ray job's
    working directory, a container image); else ``unknown``."""
    if os.environ.get("SIDBP_GIT_COMMIT"):
        return os.environ["SIDBP_GIT_COMMIT"]
    try:
        head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def review_tags(cfg: Config, kind: str, data: Path | None) -> dict[str, str]:
    """The tags every run carries, and its description (``mlflow.note.content``)."""
    lo, hi = cfg.data.lead_time_range
    params = " ".join(f"{k}={v}" for k, v in sorted((cfg.problem.params or {}).items()))
    instance = " ".join(x for x in (cfg.problem.name, f"L={lo}" if lo == hi else f"L={lo}-{hi}", params) if x)
    policy = f"{cfg.policy.kind}[{','.join(str(h) for h in cfg.policy.hidden)}]"
    version = data_version(data) if data is not None else "none"
    source = (f"the data at {cfg.data.path}" if cfg.data.path
              else f"{cfg.data.num_products} synthetic products x {cfg.data.periods} periods (seed {cfg.seed})")
    commit = git_commit()
    note = (f"**{kind}** run `{cfg.name}`: {cfg.policy.kind} policy (hidden {list(cfg.policy.hidden)}) on {instance}, "
            f"{cfg.problem.objective} objective, structure-penalty weights {list(cfg.penalty.weights)}; "
            f"{source}, data version `{version}`; {cfg.train.epochs} epochs on {cfg.train.num_workers} Ray Train "
            f"worker(s){' with GPUs' if cfg.train.use_gpu else ''}; commit `{commit}`.")
    return {KIND_TAG: kind, "problem": cfg.problem.name, "instance": instance, "policy_kind": policy,
            "penalty_weights": str(list(cfg.penalty.weights)), "data_version": version, "git_commit": commit,
            NOTE_TAG: note}


def tracking_uri(cfg: Config) -> str:
    uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # a path relative to the project
        uri = f"sqlite:///{(PROJECT_ROOT / uri[len('sqlite:///'):]).resolve()}"
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer its health
    check (MLflow's own client would retry for minutes), or a SQLite store's folder cannot
    be written."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as answer:
                if answer.status == 200:
                    return
                reason = f"HTTP {answer.status}"
        except (urllib.error.URLError, OSError) as e:
            reason = str(getattr(e, "reason", e))
        raise TrackingUnavailable(f"MLflow tracking server {uri} is not reachable ({reason}); start it, or set "
                                  "mlflow.tracking_uri (or MLFLOW_TRACKING_URI) to one that is")
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow store {uri}: the folder {folder} does not exist or cannot be written")


class Tracker:
    """Opens (or reopens) the run of a job and logs to it."""

    def __init__(self, cfg: Config):
        self.uri = tracking_uri(cfg)
        check_reachable(self.uri)
        self.client = MlflowClient(self.uri)
        mlflow.set_tracking_uri(self.uri)
        exp = self.client.get_experiment_by_name(cfg.mlflow.experiment)
        sqlite = self.uri.startswith("sqlite:")
        location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri() if sqlite else None
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(cfg.mlflow.experiment,
                                                                                          artifact_location=location)
        self.run_id: str | None = None
        self.resumed = False

    def start(self, cfg: Config, kind: str, data: Path | None = None, parent_run_id: str | None = None,
              tags: dict[str, str] | None = None, resume: bool = True) -> str:
        """Reuse the latest run with this run name, else create one; log the config.

        ``kind``: what the job is (``KIND_TAG``); ``data``: the Parquet folder it reads (its
        ``data_version`` tag); ``parent_run_id``: nest the run under that run (a sweep's trial
        under the sweep) and reuse only a run nested there; ``tags``: extra tags;
        ``resume=False``: always a new run. Every run gets ``review_tags``."""
        query = f"tags.`{RUN_NAME_TAG}` = '{cfg.name}' and tags.`{KIND_TAG}` = '{kind}'"
        if parent_run_id:
            query += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
        found = self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time DESC"],
                                        max_results=1) if resume else []
        extra = {**review_tags(cfg, kind, data), **{k: str(v) for k, v in (tags or {}).items()}}
        if found:
            self.run_id, self.resumed = found[0].info.run_id, True
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in extra.items()])
        else:
            parent = {PARENT_TAG: parent_run_id} if parent_run_id else {}
            run = self.client.create_run(self.experiment_id, run_name=cfg.name,
                                         tags={RUN_NAME_TAG: cfg.name, **extra, **parent})
            self.run_id = run.info.run_id
            # MLflow sends them in requests of 100: two for the ~125 of a config
            self.client.log_batch(self.run_id, params=[Param(k, v[:PARAM_LENGTH]) for k, v in flatten(cfg).items()])
        self.client.log_text(self.run_id, to_yaml(cfg), "config.yaml")
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        log_metrics(self.client, self.run_id, metrics, step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_table(self, table: pd.DataFrame, name: str) -> None:
        """As a CSV artifact and as an MLflow table (shown in the run's Evaluation view)."""
        self.client.log_text(self.run_id, table.to_csv(index=False), f"{name}.csv")
        self.client.log_table(self.run_id, table, f"{name}.json")

    def log_figure(self, fig, name: str) -> None:
        self.client.log_figure(self.run_id, fig, name)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))

    @contextmanager
    def ending(self):
        """Ends the run FINISHED after the block, or FAILED (the error as tag ``sidbp.error``)
        when it raises."""
        try:
            yield
        except BaseException as e:
            self.client.set_tag(self.run_id, "sidbp.error", f"{type(e).__name__}: {e}"[:5000])
            self.finish("FAILED")
            raise
        self.finish()

    def footer(self, cfg: Config, results: Path, started: float) -> str:
        """The last lines a job prints: where its results and its MLflow run are."""
        return (f"\nResults:    {results}\nMLflow run: {self.run_id} in experiment '{cfg.mlflow.experiment}' at "
                f"{self.uri}\n            open with `make ui`, then http://127.0.0.1:5000/{self.run_url()}\n"
                f"Wall time:  {time.time() - started:.0f}s")

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def run_url(self) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int | None) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0) for k, v in metrics.items()])


class EpochLogger:
    """What a Ray Train worker (rank 0) uses to log per-epoch metrics to the job's run.

    Training never waits on the tracking server: each call tries once, quickly
    (``QUICK``: one retry, a 10 s timeout, instead of MLflow's minutes of retries); when the
    server cannot be reached the epoch's metrics are kept and sent, in order, by the first
    call that reaches it again, which also records the gap (tag ``sidbp.tracking_gap`` and
    metric ``tracking/buffered_epochs``). The buffer is also kept in the file ``spool``, so
    that it survives the worker: a restarted worker sends it first, and whatever is left
    when training ends the driver sends (``training_run.train``)."""

    QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

    def __init__(self, uri: str, run_id: str, spool: Path):
        self.client, self.run_id, self.spool = MlflowClient(uri), run_id, spool
        # a spool left by a worker that died during an outage is sent first
        self.pending = [(m, step) for m, step in json.loads(spool.read_text())] if spool.exists() else []
        self.down_since: float | None = None

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.pending.append((dict(metrics), step))
        self._send()

    def close(self) -> list[tuple[dict[str, float], int]]:
        self._send()
        return self.pending

    def _keep(self) -> None:
        if not self.pending:
            self.spool.unlink(missing_ok=True)
        else:
            tmp = self.spool.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.pending))
            os.replace(tmp, self.spool)

    def _send(self) -> None:
        saved = {k: os.environ.get(k) for k in self.QUICK}
        os.environ.update(self.QUICK)
        try:
            while self.pending:
                metrics, step = self.pending[0]
                log_metrics(self.client, self.run_id, metrics, step)
                self.pending.pop(0)
            if self.down_since is not None:
                gap = time.time() - self.down_since
                self.client.set_tag(self.run_id, "sidbp.tracking_gap",
                                    f"tracking server unreachable for {gap:.0f}s; {self.buffered} epochs of metrics "
                                    "were buffered and sent when it was back")
                log_metrics(self.client, self.run_id, {"tracking/buffered_epochs": self.buffered}, step)
                logs.get("mlflow").info(f"tracking server back after {gap:.0f}s; sent {self.buffered} buffered "
                                        "epochs")
                self.down_since = None
        except Exception as e:  # the server is down or unreachable: keep the metrics, train on
            if self.down_since is None:
                self.down_since, self.buffered = time.time(), 0
                logs.get("mlflow").info(f"tracking server unreachable ({type(e).__name__}); buffering metrics")
            self.buffered = len({step for _, step in self.pending})  # epochs: an epoch may log twice
        finally:
            self._keep()
            os.environ.update({k: v for k, v in saved.items() if v is not None})
            for k in [k for k, v in saved.items() if v is None]:
                os.environ.pop(k, None)
