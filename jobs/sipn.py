"""Structure-informed policy networks on one problem, over several seeds: the plain network, the
network trained with the structure penalty, and the network structured by construction.

    python -m jobs.sipn experiment=sipn_lost_sales_L5 [key=value ...]

For each of ``sipn.seeds`` (its own products and initial weights), trains each of
``sipn.policies`` (``pipeline.adapters.training_run.train``; runs ``<name>-s<seed>-<policy>``
nested under the study's MLflow run ``<name>``; a run that already finished is reused):
``plain`` without the penalty, ``penalized`` with ``penalty.*`` as configured, and
``by_construction`` (``policy.structure=by_construction``, no penalty). Then, on the seed's
held-out products: the nominal cost, the cost under every shock and unusual start, and the
violation rates in the visited states and in probes. Every number goes to
``benchmarks/results/sipn.csv`` (this problem's rows replaced), the summary with the mean
difference over seeds and its 95% interval to this problem's section of ``docs/sipn.md``,
and the figures (the violation map over a wide slice, the seeds' cost against violation) to
``docs/figures/``. The study: ``pipeline/studies/sipn_study.py``.
"""
from __future__ import annotations

from jobs import _cli
from pipeline.config import load_config


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.studies.sipn_study import run

    return run(cfg, args)


if __name__ == "__main__":
    _cli.run("sipn", main)
