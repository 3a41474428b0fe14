"""Train one order policy across many products with DirectBackprop on Ray.

    python -m jobs.train [experiment=NAME] [key=value ...]

Reads the config, writes (or finds) the product histories as Parquet, opens the MLflow run
of this run name, trains on Ray Train fed by Ray Data, then evaluates the best checkpoint
on the held-out products against the baselines and logs the table, checkpoint and plots
(``pipeline.adapters.training_run.train``, which the other jobs call too).
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
    out.info(result.footer)
    return 0


if __name__ == "__main__":
    _cli.run("train", main)
