"""DirectBackprop against predict-then-optimize on retail demand (the paper's Section 3.3).

    python -m jobs.favorita [data.path=<Parquet file or folder>] [output_dir=...] [favorita.folds=2]
                            [favorita.seeds=[0,1,2]] [favorita.docs=docs/favorita.md] [key=value ...]

Without ``experiment=`` it reads conf/experiment/favorita.yaml (the paper's comparison).

For each fold of the stores (``favorita.folds``) and each seed (``favorita.seeds``), and
for each lead time in ``favorita.lead_times``: writes the time split of the fold's series
(``pipeline/studies/favorita_study.py``, the study), trains DirectBackprop as ``jobs.train``
does (plain, and with the structure penalty), fits the quantile forecaster of the
predict-then-optimize pipeline on the fold's training periods, and scores every policy on
the same test periods. Writes every run's tables to ``<output_dir>/f<fold>-s<seed>/`` and
the tables over all runs (``summary.csv``, ``comparison.csv``, ``spread.csv``, ``curve.csv``,
``events.csv``, ``forecast.csv``) and plots to ``favorita.output_dir``, all logged to one
MLflow run with the training runs nested under it; nothing else is written unless
``favorita.docs`` names a report to update. ``data.path=`` and ``output_dir=`` are short for
``favorita.data_path`` and ``favorita.output_dir``.
"""
from __future__ import annotations

from jobs import _cli
from pipeline.config import load_config

SHORT_KEYS = {"data.path": "favorita.data_path", "output_dir": "favorita.output_dir"}


def study_args(args: list[str]) -> list[str]:
    """``data.path=`` (the sales data) and ``output_dir=`` (where everything goes) are short
    for ``favorita.data_path`` and ``favorita.output_dir``; the rest as is."""
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        out.append(f"{SHORT_KEYS[key]}={value}" if key in SHORT_KEYS else arg)
    return out


def main(args: list[str]) -> int:
    args = study_args(args)
    if not any(a.startswith("experiment=") for a in args):  # the paper's comparison by default
        args = ["experiment=favorita", *args]
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.studies.favorita_study import run

    return run(cfg, args)


if __name__ == "__main__":
    _cli.run("favorita", main)
