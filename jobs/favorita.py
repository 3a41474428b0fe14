"""DirectBackprop against predict-then-optimize on retail demand (the paper's Section 3.3).

    python -m jobs.favorita [experiment=favorita] [data.path=<Parquet file or folder>] [output_dir=...]
                            [key=value ...]

For each lead time in ``favorita.lead_times``: writes the time split of every series
(``pipeline/studies/favorita_study.py``, the study), trains DirectBackprop as ``jobs.train``
does (plain, and with the structure penalty), fits the quantile forecaster of the predict-then-optimize
pipeline on the training periods, and scores every policy on the same test periods.
Writes ``summary.csv`` (policy, lead_time, reward, avg_inventory, fill_rate),
``weekly.csv``, ``forecast.csv`` and plots to ``favorita.output_dir`` (the split data and
the training runs under it too), all logged to one MLflow run with the training runs
nested under it. ``data.path=`` and ``output_dir=`` are short for ``favorita.data_path``
and ``favorita.output_dir``.
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
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.studies.favorita_study import run

    return run(cfg, args)


if __name__ == "__main__":
    _cli.run("favorita", main)
