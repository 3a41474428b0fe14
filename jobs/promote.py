"""Promote the registered model's challenger to champion, if it earns it.

    python -m jobs.promote [experiment=NAME] [promote.margin=0.001]
        [promote.violation_tolerance=0.0] [key=value ...]

A training job (``mlflow.register``) or a sweep registers its policy as a new version of
``models:/sidbp-<problem>`` (``mlflow.registered_model``) with the alias ``challenger``.
This job evaluates ``@challenger`` and ``@champion`` on the same held-out products and
demand paths (the test split of the configured data) and moves ``@champion`` to the
challenger only if its objective is better by ``promote.margin`` (a fraction) and each
structure-violation rate is at most the champion's plus ``promote.violation_tolerance``.
Without a champion the challenger becomes the first one. Either way the comparison is
recorded on the challenger's version (tags ``promotion.*``, a line of its description) and
as an MLflow run of kind ``promote``. Exit code 0 whether or not it promoted; 2 when there
is nothing to compare.
"""
from __future__ import annotations

import time

from jobs import _cli
from pipeline.config import load_config
from pipeline.reporting import logs


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.adapters.promotion import promote, summary

    started = time.time()
    outcome = promote(cfg)
    out = logs.get("")
    out.info("\n" + summary(outcome))
    out.info(outcome.tracker.footer(cfg, f"models:/{outcome.name}@champion", started))
    return 0


if __name__ == "__main__":
    _cli.run("promote", main)
