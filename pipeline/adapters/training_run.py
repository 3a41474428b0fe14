"""The one training API: ``train(cfg) -> TrainResult``, for ``jobs.train``, the studies, the sweep's trials
and the benchmarks. What one call does: docs/architecture.md, Training.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.tracking import PARENT_TAG, Tracker
from pipeline.config import Config, required_periods, resolve_path, to_yaml
from pipeline.reporting import logs
from pipeline.adapters.evaluation_log import evaluate_and_log
from pipeline.adapters.mlflow_model import NAME as MODEL_NAME, log_policy_model
from pipeline.adapters.ray_session import init_ray
from pipeline.adapters.ray_train import fit
from pipeline.core.problems import get_problem
from pipeline.data.synthetic import materialize
from pipeline.reporting.plots import learning_curve


@dataclass
class TrainResult:
    """What a training run left: its folder, best checkpoint and MLflow run; with the
    evaluation (``evaluate=True``), the best checkpoint's policy, the evaluation table, its
    printout (``summary``) and the lines that say where everything is (``footer``)."""
    run_dir: Path
    best_checkpoint: Path
    run_id: str
    tracker: Tracker
    policy: object = None            # pipeline.core.policy.OrderPolicy, in eval mode
    model_id: str | None = None      # the best checkpoint as an MLflow logged model (runs:/<run_id>/policy)
    table: pd.DataFrame | None = None
    summary: str = ""
    footer: str = ""


def train(cfg: Config, *, parent_run_id: str | None = None, tags: dict[str, str] | None = None,
          splits: dict[str, Path] | None = None, run_dir: Path | None = None, tracker: Tracker | None = None,
          callbacks: list | None = None, evaluate: bool = True) -> TrainResult:
    """Train ``cfg`` on Ray Train and (``evaluate``) evaluate its best checkpoint.

    ``parent_run_id``: nest the MLflow run under that run (a study's); the run of this name
    is resumed wherever it was nested before. ``tags``: extra tags on the run.
    ``splits``: the train/valid/test Parquet folders when the caller wrote them (a sweep),
    else ``cfg.data`` is written (or found) under ``cfg.output_dir``. ``run_dir``: the run's
    folder, by default ``<output_dir>/<name>``. ``tracker``: a run the caller opened and
    ends itself (a sweep's trial marks its own status); by default the run of ``cfg.name``
    is opened here and ended FINISHED, or FAILED when training raises. ``callbacks``: extra
    Ray Train callbacks (a Tune trial's report callback)."""
    started = time.time()
    out_dir = resolve_path(cfg.output_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])

    owned = tracker is None
    if owned:
        tracker = Tracker(cfg)  # before the data: an unreachable tracking server fails at once
    if splits is None:
        splits = prepare_data(cfg, out_dir, problem)
    if owned:
        extra = {**(tags or {}), **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
        run_id = tracker.start(cfg, kind="train", data=splits["train"].parent, tags=extra)
        logs.get("mlflow").info(f"run {run_id} ({'resumed' if tracker.resumed else 'new'}) at {tracker.uri}")
    result = TrainResult(run_dir, ckpt.best_path(run_dir), tracker.run_id, tracker)

    with tracker.ending() if owned else nullcontext():
        init_ray(cfg)
        for metrics, step in fit(cfg, splits, run_dir, tracker.uri, tracker.run_id, width, callbacks=callbacks):
            tracker.log_metrics(metrics, step)  # what rank 0 could not send during an outage
        if evaluate:
            evaluate_best(cfg, problem, splits, width, result, started)
    if evaluate:
        result.footer = tracker.footer(cfg, run_dir / "evaluation.csv", started)
    return result


def prepare_data(cfg: Config, out_dir: Path, problem=None) -> dict[str, Path]:
    """The train/valid/test Parquet folders of ``cfg.data``, written once and found again."""
    log = logs.get("data")
    log.info("preparing product histories ...")
    splits = materialize(cfg.data, cfg.seed, out_dir, required_periods(cfg), problem)
    log.info(f"{splits['train'].parent}")
    return splits


def evaluate_best(cfg: Config, problem, splits: dict[str, Path], width: int, result: TrainResult,
                  started: float) -> None:
    """The best checkpoint logged to the run as the MLflow model ``policy`` (linked to that
    epoch's metrics), evaluated on the held-out products against the baselines (the
    metrics linked to the model too), and logged with the checkpoint file, the best epoch,
    the wall time and the learning curve."""
    tracker = result.tracker
    policy, _, state = ckpt.load_policy(result.best_checkpoint)
    result.policy = policy
    result.model_id = log_policy_model(tracker.uri, tracker.run_id, result.best_checkpoint, splits["test"],
                                       cfg.eval.round_actions, step=state["epoch"])
    logs.get("mlflow").info(f"logged the best checkpoint as the MLflow model runs:/{tracker.run_id}/{MODEL_NAME} "
                            f"(models:/{result.model_id})")
    logs.get("eval").info("evaluating the best checkpoint on held-out products ...")
    result.table, result.summary = evaluate_and_log(cfg, policy, problem, splits, width, tracker, result.run_dir,
                                                    model_id=result.model_id)
    tracker.log_metrics({"best_epoch": state["epoch"], "wall_seconds": time.time() - started})
    tracker.log_artifact(result.best_checkpoint, "checkpoint")
    history = {"train loss": tracker.metric_history("train/loss"),
               "validation cost": tracker.metric_history("valid/avg_cost")}
    tracker.log_figure(learning_curve(history, {}), "plots/learning_curve.png")
