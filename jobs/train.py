"""Train one order policy across many products with DirectBackprop on Ray.

    python -m jobs.train [experiment=NAME] [key=value ...]

Reads the config, writes (or finds) the product histories as Parquet, opens the MLflow run
of this run name, trains on Ray Train fed by Ray Data, then evaluates the best checkpoint
on the held-out products against the baselines and logs the table, checkpoint and plots.
"""
from __future__ import annotations

import time

from jobs import _cli
from pipeline.config import load_config, required_periods, resolve_path, to_yaml


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.adapters import checkpoint as ckpt
    from pipeline.data.synthetic import materialize
    from pipeline.reporting.plots import learning_curve
    from pipeline.core.problems import get_problem
    from pipeline.adapters.ray_train import fit
    from pipeline.adapters.ray_session import init_ray
    from pipeline.adapters.evaluation_log import evaluate_and_log
    from pipeline.adapters.tracking import Tracker

    started = time.time()
    out_dir = resolve_path(cfg.output_dir)
    run_dir = out_dir / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])

    tracker = Tracker(cfg)  # before the data: an unreachable tracking server fails at once
    print("[data] preparing product histories ...", flush=True)
    splits = materialize(cfg.data, cfg.seed, out_dir, required_periods(cfg))
    print(f"[data] {splits['train'].parent}", flush=True)

    run_id = tracker.start(cfg, kind="train", data=splits["train"].parent)
    print(f"[mlflow] run {run_id} ({'resumed' if tracker.resumed else 'new'}) at {tracker.uri}", flush=True)
    with tracker.ending():
        init_ray(cfg)
        tracker.send_buffered(fit(cfg, splits, run_dir, tracker.uri, run_id, width))

        print("[eval] evaluating the best checkpoint on held-out products ...", flush=True)
        best = run_dir / "checkpoints" / "best" / ckpt.FILE
        policy, _, state = ckpt.load_policy(best)
        _, summary = evaluate_and_log(cfg, policy, problem, splits, width, tracker, run_dir)
        tracker.log_metrics({"best_epoch": state["epoch"], "wall_seconds": time.time() - started})
        tracker.log_artifact(best, "checkpoint")
        history = {"train loss": tracker.metric_history("train/loss"),
                   "validation cost": tracker.metric_history("valid/avg_cost")}
        tracker.log_figure(learning_curve(history, {}), "plots/learning_curve.png")

    print("\n" + summary)
    print(tracker.footer(cfg, run_dir / "evaluation.csv", started))
    return 0


if __name__ == "__main__":
    _cli.run("train", main)
