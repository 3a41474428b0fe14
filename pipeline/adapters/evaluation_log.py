"""The evaluation a training job ends with and ``jobs.evaluate`` runs on its own: the
learned policy against the baselines on held-out products, logged to the job's MLflow run
(table, ``test/...`` metrics, plots) and written beside the run's other outputs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from pipeline.core.evaluation import format_table, held_out_report
from pipeline.data.parquet import read_products
from pipeline.reporting.plots import order_vs_on_hand


def evaluate_and_log(cfg, policy, problem, splits: dict[str, Path], width: int, tracker, run_dir: Path,
                     split: str = "test", model_id: str | None = None) -> tuple[pd.DataFrame, str]:
    """``held_out_report`` of the learned policy (``learned``) on ``splits[split]``
    (baselines fitted on ``splits["train"]``), logged through ``tracker`` (a
    ``pipeline.adapters.tracking.Tracker``; the metrics linked to the logged model
    ``model_id`` when given); returns the table and its printout."""
    test, train = read_products(splits[split]), read_products(splits["train"])
    table, baselines, measured = held_out_report(cfg, problem, {"learned": policy}, train, test, width)
    tracker.log_table(table, "evaluation")
    tracker.log_metrics({f"test/{row.policy}/{k}": getattr(row, k)  # NaN: not measured for it
                         for row in table.itertuples() for k in table.columns
                         if k != "policy" and getattr(row, k) == getattr(row, k)}, model_id=model_id)
    tracker.log_metrics({f"test/learned/{k}": v for k, v in measured["learned"].items()},  # per property, in and out
                        model_id=model_id)
    shown = {k: v for k, v in baselines.items() if k in ("dp", "omniscient", "estimated")}
    tracker.log_figure(order_vs_on_hand(policy, shown, test, cfg.eval.start, width, cfg.eval.plot_products,
                                        problem.state_names(width)), "plots/order_vs_on_hand.png")
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "evaluation.csv", index=False)
    return table, (f"{split.capitalize()} products: {test.size}, periods {cfg.eval.start}..{test.periods - 1} "
                   f"(first {cfg.eval.warmup} not scored), {cfg.problem.objective} objective\n{format_table(table)}")
