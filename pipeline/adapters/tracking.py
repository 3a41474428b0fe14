"""MLflow adapter: one object owns tracking for a training job.

Each job is one MLflow run, found again by its run name so that a resumed job continues
the same run. The store defaults to a SQLite file in the project folder, always given as
an absolute URI (Ray Tune and Ray workers change the working directory).
"""
from __future__ import annotations

import getpass
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline.config import PROJECT_ROOT, Config, flatten, to_yaml
from pipeline.errors import TrackingUnavailable
from pipeline.reporting import logs
from pipeline.data.parquet import data_version

# MLflow's notes on creating a new SQLite store's tables, and on starting and stopping
# system metrics, are not the job's output
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.system_metrics"):
    logging.getLogger(_name).setLevel(logging.WARNING)

RUN_NAME_TAG = "sidbp.run_name"
KIND_TAG = "sidbp.kind"            # train, evaluate, sweep, trial, favorita, benchmark, sipn
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
NOTE_TAG = "mlflow.note.content"   # the run's description in the MLflow UI
# on every run (docs/mlflow.md): what a reviewer filters and groups by
REVIEW_TAGS = ("problem", "instance", "policy_kind", "penalty_weights", "data_version", "git_commit")
PARAM_LENGTH = 6000  # the longest param value MLflow keeps
CONFIG_CHANGED_TAG = "sidbp.config_changed"  # a resumed run whose config changed: what changed, when
DATASET_CONTEXT = {"evaluate": "evaluation", "promote": "evaluation"}  # a dataset input's context by run kind; else "training"


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


def source_tags(commit: str | None = None) -> dict[str, str]:
    """MLflow's user and source tags (the runs table's User and Source columns): the user
    running the job, the module it was started as (``python -m jobs.train`` gives
    ``jobs.train``, where ``sys.argv[0]`` would be a path; a script gives its file name),
    ``JOB`` for the project's jobs and ``LOCAL`` for anything else (a test, a notebook), and
    the commit (``commit``, default ``git_commit()``, without ``-dirty``) where known.
    MLflow's ``resolve_tags()`` computes these only for fluent runs, and names the source by
    ``sys.argv[0]``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid-{os.getuid()}"
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None) or Path(sys.argv[0] if sys.argv and sys.argv[0] else "python").name
    tags = {"mlflow.user": user, "mlflow.source.name": name,
            "mlflow.source.type": "JOB" if name.startswith("jobs.") else "LOCAL"}
    commit = (commit or git_commit()).removesuffix("-dirty")
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def dataset_input(folder: Path, version: str, context: str = "training") -> DatasetInput:
    """The Parquet data folder a run read, as an MLflow dataset input: named by the folder,
    its digest the folder's ``data_version`` (the same string as the run's tag), its source
    the folder's URI; ``context``: ``training``, ``evaluation``, ..."""
    folder = Path(folder).resolve()
    dataset = Dataset(name=folder.name, digest=version, source_type="local",
                      source=json.dumps({"uri": folder.as_uri()}))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])


def tracking_uri(cfg: Config) -> str:
    """``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the current
    folder (never the installed package's); a relative SQLite path is taken from the current folder."""
    uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # a path relative to the current folder
        uri = f"sqlite:///{(Path.cwd() / uri[len('sqlite:///'):]).resolve()}"
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
        ``resume=False``: always a new run. Every run gets ``review_tags`` and ``source_tags``
        (``tags`` may override them: a sweep's trials carry the sweep driver's), and ``data``
        as a dataset input (``dataset_input``). A resumed run gets the params it lacks, and a
        changed config is recorded (``record_config_changes``) before ``config.yaml`` is
        overwritten."""
        query = f"tags.`{RUN_NAME_TAG}` = '{cfg.name}' and tags.`{KIND_TAG}` = '{kind}'"
        if parent_run_id:
            query += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
        found = self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time DESC"],
                                        max_results=1) if resume else []
        review = review_tags(cfg, kind, data)
        extra = {**source_tags(review["git_commit"]), **review, **{k: str(v) for k, v in (tags or {}).items()}}
        params = {k: v[:PARAM_LENGTH] for k, v in flatten(cfg).items()}
        if found:
            self.run_id, self.resumed = found[0].info.run_id, True
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in extra.items()])
            self.record_config_changes(cfg, params)
        else:
            parent = {PARENT_TAG: parent_run_id} if parent_run_id else {}
            run = self.client.create_run(self.experiment_id, run_name=cfg.name,
                                         tags={RUN_NAME_TAG: cfg.name, **extra, **parent})
            self.run_id = run.info.run_id
            # MLflow sends them in requests of 100: two for the ~125 of a config
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])
        if data is not None:  # a resumed run on the same data keeps one input (MLflow drops the repeat)
            self.client.log_inputs(self.run_id, [dataset_input(data, review["data_version"],
                                                               DATASET_CONTEXT.get(kind, "training"))])
        self.client.log_text(self.run_id, to_yaml(cfg), "config.yaml")
        return self.run_id

    def record_config_changes(self, cfg: Config, params: dict[str, str]) -> dict[str, tuple[str, str]]:
        """A resumed run's params against the config it now runs with. MLflow params cannot
        change: those the run lacks are logged; for those whose value changed (or that the
        config no longer has) the run gets the tag ``CONFIG_CHANGED_TAG``
        (``<UTC time>: key: old -> new; ...``), the artifact
        ``config_changes/<UTC time>.txt`` (one change a line) and the config it had,
        ``config_history/<UTC time>.yaml``, before ``config.yaml`` is overwritten. Returns
        the changes, ``{key: (old, new)}``."""
        old = self.client.get_run(self.run_id).data.params
        new_keys = [Param(k, v) for k, v in params.items() if k not in old]
        if new_keys:
            self.client.log_batch(self.run_id, params=new_keys)
        changes = {k: (v, params.get(k, "(absent)")) for k, v in sorted(old.items()) if params.get(k) != v}
        if not changes:
            return changes
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        lines = [f"{k}: {a} -> {b}" for k, (a, b) in changes.items()]
        self.client.set_tag(self.run_id, CONFIG_CHANGED_TAG, f"{stamp}: {'; '.join(lines)}"[:5000])
        self.client.log_text(self.run_id, "\n".join(lines) + "\n", f"config_changes/{stamp}.txt")
        try:
            previous = mlflow.artifacts.load_text(f"{self.client.get_run(self.run_id).info.artifact_uri}/config.yaml")
        except Exception:  # noqa: BLE001  (a run without config.yaml: nothing to keep)
            previous = None
        if previous is not None:
            self.client.log_text(self.run_id, previous, f"config_history/{stamp}.yaml")
        logs.get("mlflow").info(f"run {self.run_id} resumed with {len(changes)} changed config value(s) "
                                f"({', '.join(changes)}); its params keep the first values, the changes are "
                                f"in the tag {CONFIG_CHANGED_TAG} and config_changes/{stamp}.txt")
        return changes

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """``model_id``: also link them to that logged model (its page in the Models tab)."""
        log_metrics(self.client, self.run_id, metrics, step, model_id)

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


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int | None,
                model_id: str | None = None) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0, model_id=model_id)
                                      for k, v in metrics.items()])


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


class WorkerSystemMetrics:
    """MLflow's system metrics of one Ray Train worker, logged to the job's run under
    ``system/rank_<k>/...`` (every worker, rank 0 included): MLflow's CPU, memory, disk,
    network (and GPU, where there is one) monitors, plus this worker process's own CPU and
    memory (``process_cpu_percentage``, ``process_memory_megabytes``). One sample every
    ``SECONDS`` on a thread of its own, and a last one at ``stop`` (a run shorter than the
    interval still has one); the steps continue after those a resumed run has.

    Training never waits on it: every request is made on its thread, a sample that cannot
    be logged (the tracking server is down) is dropped, and ``stop`` waits at most
    ``wait`` seconds. Without ``psutil`` (or any other failure to start) it logs one line and
    does nothing."""

    SECONDS = 10.0

    def __init__(self, uri: str, run_id: str, rank: int, seconds: float = SECONDS):
        self.uri, self.run_id, self.node, self.seconds = uri, run_id, f"rank_{rank}", seconds
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.monitor = None
        self.failed = False

    def start(self) -> "WorkerSystemMetrics":
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # imports psutil
            self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.seconds, node_id=self.node,
                                                tracking_uri=self.uri)
            self.monitor.monitors.append(_ProcessMonitor())
        except Exception as e:  # noqa: BLE001  (psutil missing, ...: train without system metrics)
            logs.get("mlflow").info(f"no system metrics for {self.node}: {type(e).__name__}: {e}")
            return self
        self.thread = threading.Thread(target=self._loop, name=f"system-metrics-{self.node}", daemon=True)
        self.thread.start()
        return self

    def stop(self, wait: float = 3.0) -> None:
        """Log a last sample and end the thread; returns after at most ``wait`` seconds."""
        if self.thread is None:
            return
        thread, self.thread = self.thread, None
        self.done.set()

        def last() -> None:
            thread.join()
            self._log()

        closing = threading.Thread(target=last, name=f"system-metrics-{self.node}-stop", daemon=True)
        closing.start()
        closing.join(wait)

    def _loop(self) -> None:
        try:  # after the steps a resumed run already has (on this thread: it may wait on the server)
            self.monitor._logging_step = self.monitor._get_next_logging_step(self.run_id)
        except Exception:  # noqa: BLE001
            pass
        while not self.done.wait(self.seconds):
            self._log()

    def _log(self) -> None:
        m = self.monitor
        try:
            m.collect_metrics()
            m.publish_metrics(m.aggregate_metrics())  # records the sample and clears the monitors
            m.mlflow_logger.flush()
            self.failed = False
        except Exception as e:  # noqa: BLE001  (the server is unreachable: drop the sample, go on)
            m.mlflow_logger.data = []
            for monitor in m.monitors:
                monitor.clear_metrics()
            if not self.failed:
                self.failed = True
                logs.get("mlflow").info(f"system metrics of {self.node} not logged ({type(e).__name__}); "
                                        "dropping samples until the tracking server answers")


class _ProcessMonitor:
    """This process's CPU use (percent of one core) and resident memory, for
    ``WorkerSystemMetrics``: MLflow's own monitors measure the whole machine, the same for
    every worker on it."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()
        self.process.cpu_percent()  # the first call only starts the measurement
        self._metrics: dict[str, list[float]] = {}

    def collect_metrics(self) -> None:
        for key, value in (("process_cpu_percentage", self.process.cpu_percent()),
                           ("process_memory_megabytes", self.process.memory_info().rss / 1e6)):
            self._metrics.setdefault(key, []).append(value)

    def aggregate_metrics(self) -> dict[str, float]:
        return {k: round(sum(v) / len(v), 1) for k, v in self._metrics.items() if v}

    def clear_metrics(self) -> None:
        self._metrics.clear()
