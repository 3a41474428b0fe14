"""Evaluate a trained policy on a dataset: metrics against the baselines, and plots.

    python -m jobs.evaluate [experiment=NAME] [model.uri=URI] [data.path=FOLDER] [key=value ...]

``model.uri``: a checkpoint file, ``runs:/<run_id>`` (a training run's checkpoint),
``models:/<name>@<alias>`` or ``models:/<name>/<version>``; by default the champion of the
registered model (``models:/sidbp-<problem>@champion``). The policy is evaluated on the
test split of the configured data (``data.path``, or the synthetic population of
``data.*``) with the problem it was trained on, against ``eval.baselines``, on the same
demand paths. Everything goes to an MLflow run of kind ``evaluate`` (tagged with the model
version and linked to the run that trained it) and to ``<output_dir>/<name>/evaluate/``.
"""
from __future__ import annotations

import time

from jobs import _cli
from pipeline.config import load_config, required_periods, resolve_path
from pipeline.reporting import logs

log_data, log_eval, log_mlflow, log_model = (logs.get(t) for t in ("data", "eval", "mlflow", "model"))
plain = logs.get("")


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.data.synthetic import materialize
    from pipeline.core.problems import get_problem
    from pipeline.adapters.evaluation_log import evaluate_and_log
    from pipeline.adapters.registry import load_model
    from pipeline.adapters.tracking import Tracker

    started = time.time()
    tracker = Tracker(cfg)  # an unreachable tracking server fails at once
    policy, cfg, state, model = load_model(cfg)
    log_model.info(f"{model.version} (asked for {model.uri}): {cfg.problem.name}, {cfg.policy.kind} policy, "
                   f"epoch {state['epoch']}")
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = state["state_width"]
    out_dir = resolve_path(cfg.output_dir)
    run_dir = out_dir / cfg.name / "evaluate"
    log_data.info("preparing product histories ...")
    splits = materialize(cfg.data, cfg.seed, out_dir, required_periods(cfg), problem)
    log_data.info(f"{splits['test']}")

    run_id = tracker.start(cfg, kind="evaluate", data=splits["test"].parent, resume=False,
                           tags={"model_uri": model.uri, "model_version": model.version,
                                 "model_run_id": model.run_id or ""})
    log_mlflow.info(f"run {run_id} at {tracker.uri}")
    with tracker.ending():
        log_eval.info("the policy and the baselines on the test products ...")
        _, summary = evaluate_and_log(cfg, policy, problem, splits, width, tracker, run_dir)
        tracker.log_metrics({"wall_seconds": time.time() - started})
    plain.info("\n" + summary)
    plain.info(tracker.footer(cfg, run_dir / "evaluation.csv", started))
    return 0


if __name__ == "__main__":
    _cli.run("evaluate", main)
