"""Sweep the structure-penalty weights and the learning rate with Ray Tune (ASHA).

    python -m jobs.sweep [experiment=NAME] [key=value ...]

Writes (or finds) the product histories once, opens one MLflow run for the sweep (the run
name), and runs ``sweep.num_samples`` Ray Train trials, ``sweep.max_concurrent_trials`` at a
time, each an MLflow run nested under the sweep's, named ``<name>-trial-<k>``. ASHA stops
trials that fall behind on the validation objective. The sweep run ends with the results
table (every trial: parameters, status, validation cost, violation rates, on the Pareto
front or not) and the plot of validation cost against the out-of-distribution violation
rate. The best finished trial's checkpoint is logged to its run as the MLflow model and
registered as a new version of ``models:/sidbp-<problem>`` with the alias ``challenger``
(``mlflow.registered_model``; smoke sweeps register as ``sidbp-smoke-<problem>``);
``python -m jobs.promote`` compares it with ``@champion`` and moves that alias only if
it is better.

A failed trial is reported and the sweep goes on; the exit code is 1 only when every trial
failed. A sweep whose driver died is resumed by the same command: finished trials are kept,
unfinished ones continue from their checkpoints. A sweep that had finished runs afresh.
"""
from __future__ import annotations

from jobs import _cli
from pipeline.config import load_config
from pipeline.reporting import logs

plain = logs.get("")


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.adapters.tune_sweep import FAILED, format_results, run_sweep

    outcome = run_sweep(cfg)
    table, tracker = outcome.table, outcome.tracker
    plain.info(f"\nSweep '{cfg.name}': {len(table)} trials, {cfg.problem.objective} objective "
               f"(validation products; on_front: Pareto front of the finished trials)")
    plain.info(format_results(table.drop(columns="error")))
    for row in table[table.status == FAILED].itertuples():
        plain.info(f"  {row.trial} failed: {row.error}")
    plain.info(f"\nResults:    {outcome.sweep_dir}/sweep_results.csv, {outcome.sweep_dir}/pareto.png")
    plain.info(f"MLflow run: {outcome.run_id} in experiment '{cfg.mlflow.experiment}' at {tracker.uri}")
    plain.info(f"            open with `make ui`, then http://127.0.0.1:5000/{tracker.run_url()}")
    plain.info(f"Wall time:  {outcome.seconds:.0f}s")
    if not outcome.ok:
        plain.info("error: every trial failed")
        return 1
    return 0


if __name__ == "__main__":
    _cli.run("sweep", main)
