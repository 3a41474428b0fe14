"""Train one order policy across many products with DirectBackprop on Ray.

    python -m jobs.train [experiment=NAME] [key=value ...]

Reads the config, writes (or finds) the product histories as Parquet, opens the MLflow run
of this run name, trains on Ray Train fed by Ray Data, then evaluates the best checkpoint
on the held-out products against the baselines and logs the table, checkpoint and plots
(``pipeline.adapters.training_run.train``, which the other jobs call too). The best
checkpoint is logged as the MLflow model ``runs:/<run_id>/policy`` and, with
``mlflow.register`` (the default), registered as a new version with the alias
``challenger``; ``python -m jobs.promote`` decides whether it becomes the champion.
"""
from __future__ import annotations

from jobs import _cli
from pipeline.config import load_config
from pipeline.reporting import logs


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.adapters.training_run import train

    result = train(cfg)
    out = logs.get("")
    out.info("\n" + result.summary)
    if cfg.mlflow.register:
        from pipeline.adapters.registry import register_training_run

        version = register_training_run(result.tracker.client, cfg, result.run_id, result.model_id, result.table)
        out.info(f"\nModel:      models:/{version.name}/{version.version} (@challenger); compare it with the "
                 "champion and promote it: `python -m jobs.promote` with this job's arguments")
    out.info(result.footer)
    return 0


if __name__ == "__main__":
    _cli.run("train", main)
