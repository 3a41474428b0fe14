"""Structure-informed against plain DirectBackprop on one problem: the paper's Figure 1,
robustness under shocks and off-distribution starts, and the numbers.

    python -m jobs.sipn experiment=sipn_lost_sales_L5 [key=value ...]

Trains the configuration twice (``pipeline.adapters.training_run.train``): once without
the penalty (run ``<name>-plain``) and once with ``penalty.*`` as configured (run
``<name>-sipn``); a run that already finished is reused. Then, on the held-out products
and the same demand paths: the nominal evaluation with violation rates, the robustness
table, and contours of the order over the first two state entries for four products
(plain on top, penalized below). Results go to ``<output_dir>/<name>/``, an MLflow run
``<name>`` with the two training runs nested under it, and this problem's section of
``docs/sipn.md`` (its block ``sipn:<name>``; the prose around the blocks is the file's
own; figure in ``docs/figures/``). The study: ``pipeline/studies/penalty_comparison.py``.
"""
from __future__ import annotations

from jobs import _cli
from pipeline.config import load_config


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.studies.penalty_comparison import run

    return run(cfg, args)


if __name__ == "__main__":
    _cli.run("sipn", main)
