"""DirectBackprop against predict-then-optimize on retail demand (the paper's Section 3.3); ``run`` is
the study (``jobs.favorita``). Splits, scored ranges and economics: docs/favorita.md, The study.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.config import PROJECT_ROOT, ConfigError, load_config, resolve_path
from pipeline.core.baselines import critical_fractile
from pipeline.core.batch import FEATURE_PREFIX, ProductBatch
from pipeline.core.forecast import (MovingAverageOrderUpTo, QuantileOrderUpTo, fit_forecaster, forecast_metrics,
                                    moving_average_metrics)
from pipeline.core.problems import get_problem
from pipeline.core.rollout import rollout
from pipeline.data.calendar import calendar_features, period_dates, period_days
from pipeline.data.favorita_sources import long_sales_to_series
from pipeline.data.parquet import parquet_files, read_products, write_shards
from pipeline.data.retail import synthetic_retail
from pipeline.data.series import list_column, matrix, read_series
from pipeline.reporting import logs
from pipeline.reporting.plots import series_sample, weekly_aggregates
from pipeline.reporting.report_blocks import markdown_table, write_block
from pipeline.adapters.tracking import Tracker
from pipeline.adapters.training_run import train

SHARED_WEEKLY = PROJECT_ROOT.parent / "shared" / "data" / "favorita_weekly" / "sales.parquet"
SUMMARY_COLUMNS = ["policy", "lead_time", "reward", "avg_inventory", "fill_rate"]


@dataclass(frozen=True)
class TimeSplit:
    train_end: int
    valid_end: int
    test_end: int
    history: int  # periods before a scored range that the policies see, unscored
    warmup: int   # periods from an empty system, unscored

    def window(self, split: str) -> tuple[int, int]:
        """The periods ``[first, stop)`` of a split's folder."""
        if split == "train":
            return 0, self.train_end
        scored = self.train_end if split == "valid" else self.valid_end
        stop = self.valid_end if split == "valid" else self.test_end
        return scored - self.warmup - self.history, stop

    def check(self, periods: int) -> None:
        if self.test_end > periods:
            raise ValueError(f"favorita.test_end={self.test_end} is past the {periods} periods of the data")
        if self.train_end - self.warmup - self.history < 0:
            raise ValueError(f"favorita.train_end={self.train_end} leaves no room for {self.history} periods "
                             f"of history and {self.warmup} of warm-up before validation")


def load_series(fcfg, retail_cfg, seed: int) -> tuple[pa.Table, dict]:
    """The series layout of ``data_path`` when set, else of the configured source, and
    what was repaired on the way."""
    if fcfg.source == "synthetic" and not fcfg.data_path:
        return synthetic_retail(retail_cfg, seed), {"source": "synthetic retail (retail.*)"}
    path = Path(fcfg.data_path).expanduser() if fcfg.data_path else SHARED_WEEKLY
    if not path.exists():
        raise FileNotFoundError(f"favorita.data_path: no Parquet data at {path}")
    files = parquet_files(path)
    if not files:
        raise FileNotFoundError(f"favorita.data_path: no *.parquet files under {path}")
    names = pq.read_schema(files[0]).names
    if "demand" in names:
        return read_series(path), {"source": str(path)}

    table, counts = long_sales_to_series(pq.ParquetDataset([str(f) for f in files]).read())
    return table, {"source": str(path), **counts}


def training_table(series: pa.Table, first: int, stop: int, lead_time: int, fcfg) -> pa.Table:
    """Periods ``[first, stop)`` of every series in the training layout of
    ``pipeline.data`` (the economics from the config; no ground-truth distribution)."""
    n = series.num_rows
    demand = matrix(series, "demand")[:, first:stop]
    cols = {"product_id": series.column("product_id"), "demand": list_column(demand)}
    for name in series.column_names:
        if name.startswith(FEATURE_PREFIX):
            cols[name] = list_column(matrix(series, name)[:, first:stop])
    cols.update({
        "holding_cost": pa.array(np.full(n, fcfg.holding_cost)), "shortage_cost": pa.array(np.zeros(n)),
        "unit_cost": pa.array(np.full(n, fcfg.unit_cost)), "price": pa.array(np.full(n, fcfg.price)),
        "lead_time": pa.array(np.full(n, lead_time, dtype=np.int64)),
        "true_dist": pa.array(["unknown"] * n), "true_mean": pa.array(demand.mean(axis=1).astype(np.float64)),
        "true_shape": pa.array(np.zeros(n)),
    })
    return pa.table(cols)


def write_splits(series: pa.Table, split: TimeSplit, lead_time: int, fcfg, folder: Path,
                 shard_rows: int) -> dict[str, Path]:
    """train/ valid/ test/ folders for ``jobs.train`` (``data.path``)."""
    out = {}
    for name in ("train", "valid", "test"):
        first, stop = split.window(name)
        target = folder / name
        for old in target.glob("*.parquet"):
            old.unlink()
        write_shards(training_table(series, first, stop, lead_time, fcfg), target, shard_rows)
        out[name] = target
    return out


@torch.no_grad()
def score(problem, policies: dict, batch: ProductBatch, split: TimeSplit, width: int, lead_time: int,
          dates: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every policy on the same test paths, whole-unit orders. Returns the summary (one
    row per policy: total reward, average on-hand inventory per series and period, fill
    rate), the per-period aggregates, and each policy's trajectory (for plots)."""
    start = split.history
    horizon = batch.periods - start
    rows, weekly, trajectories = [], [], {}
    for name, policy in policies.items():
        traj = rollout(problem, policy, batch, start, horizon, width, round_actions=True)
        w = slice(split.warmup, None)
        reward = batch.price[:, None] * traj.sales[:, w] - traj.cost[:, w]
        rows.append({"policy": name, "lead_time": lead_time, "reward": float(reward.sum()),
                     "avg_inventory": float(traj.held[:, w].mean()),
                     "fill_rate": float(traj.sales[:, w].sum() / traj.demand[:, w].sum().clamp_min(1e-9))})
        weekly.append(pd.DataFrame({
            "policy": name, "lead_time": lead_time, "period": np.arange(split.valid_end, split.test_end),
            "date": dates[split.valid_end:split.test_end],
            "demand": traj.demand[:, w].sum(0).numpy(), "sales": traj.sales[:, w].sum(0).numpy(),
            "orders": traj.orders[:, w].sum(0).numpy(), "inventory": traj.held[:, w].sum(0).numpy(),
            "reward": reward.sum(0).numpy()}))
        trajectories[name] = traj
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.concat(weekly, ignore_index=True), trajectories


# ---------------------------------------------------------------- the study (jobs.favorita)

DIRECTBACKPROP = {"directbackprop": ["penalty.weights=[0.0]"], "directbackprop_sipn": []}


def run(cfg, args: list[str]) -> int:
    """For each lead time in ``favorita.lead_times``: the time split of every series,
    DirectBackprop trained (``training_run.train``, plain and with the structure penalty, each
    an MLflow run nested under the study's), the quantile forecaster of
    predict-then-optimize fitted on the training periods, and every policy scored on the
    same test periods; the tables, plots and report. ``args``: the command line, for the
    training runs' configs and the report."""
    log, plain = logs.get("favorita"), logs.get("")
    f = cfg.favorita
    if "directbackprop_sipn" in f.policies and max(cfg.penalty.weights) <= 0:
        raise ConfigError("penalty.weights must be > 0 for the directbackprop_sipn policy of jobs.favorita")
    t = cfg.train
    if t.history + t.horizon > f.train_end:
        raise ConfigError(f"train.history + train.horizon = {t.history}+{t.horizon} must fit in the "
                          f"{f.train_end} training periods (favorita.train_end); see experiment=favorita")

    torch.set_num_threads(cfg.train.cpus_per_worker)  # the forecaster's fit and the scoring, in this process
    started = time.time()
    out = resolve_path(f.output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    logs.get("data").info("loading series ...")
    series, info = load_series(f, cfg.retail, cfg.seed)
    periods = len(series.column("demand")[0])
    split = TimeSplit(f.train_end, f.valid_end, f.test_end or periods, cfg.eval.start, cfg.eval.warmup)
    split.check(periods)
    start_date = series.column("start_date")[0].as_py()
    frequency = str(series.column("frequency")[0])
    dates = period_dates(start_date, periods, frequency)
    logs.get("data").info(f"{series.num_rows} series x {periods} periods from {start_date} ({info['source']}); "
                          f"train periods 0-{split.train_end - 1}, validation {split.train_end}-{split.valid_end - 1}, "
                          f"test {split.valid_end}-{split.test_end - 1}")

    problem = get_problem("lost_sales", {})
    tracker = Tracker(cfg)
    run_id = tracker.start(cfg, kind="favorita", data=resolve_path(f.data_path) if f.data_path else None,
                           tags={"study": "favorita"})
    summaries, weeklies, forecasts = [], [], []
    with tracker.ending():
        tracker.log_metrics({f"data/{k}": float(v) for k, v in info.items() if isinstance(v, (int, float))})
        forecaster, fractile = None, float("nan")
        for lead_time in f.lead_times:
            width = problem.state_width(lead_time)
            splits = write_splits(series, split, lead_time, f, out / "data" / f"L{lead_time}", cfg.data.shard_rows)
            train_batch, test = read_products(splits["train"]), read_products(splits["test"])
            policies = {}
            for label, extra in DIRECTBACKPROP.items():
                if label not in f.policies:
                    continue
                name = f"{cfg.name}-L{lead_time}-{label}"
                run_args = args + [f"name={name}", f"output_dir={out / 'runs'}", f"data.path={splits['train'].parent}",
                                   f"data.periods={split.train_end}", f"data.lead_time_range=[{lead_time},{lead_time}]",
                                   "problem.name=lost_sales", "problem.objective=reward", "eval.baselines=[]"] + extra
                plain.info("")
                log.info(f"L={lead_time}: training {label}: python -m jobs.train {' '.join(run_args)}")
                result = train(load_config(run_args), parent_run_id=run_id)
                plain.info("\n" + result.summary)
                plain.info(result.footer)
                policies[label] = result.policy
            fractile = float(critical_fractile(test, "reward")[0])
            if "pto_mqcnn" in f.policies:
                if forecaster is None:  # one forecaster for every lead time: horizons up to the longest
                    plain.info("")
                    log.info(f"fitting the quantile forecaster ({f.forecast_epochs} epochs) ...")
                    levels = sorted({*f.quantiles, round(fractile, 6)})
                    forecaster, history = fit_forecaster(
                        train_batch, split.train_end, levels, max(f.lead_times) + 1, epochs=f.forecast_epochs,
                        lr=f.forecast_lr, seed=cfg.seed, channels=cfg.policy.channels,
                        dilations=tuple(cfg.policy.dilations),  # the same receptive field as the policy's CNN
                        progress=lambda epoch, loss: plain.info(f"  epoch {epoch + 1}/{f.forecast_epochs}  "
                                                                f"pinball loss {loss:.4f}"))
                    for epoch, loss in enumerate(history):
                        tracker.log_metrics({"forecast/train_pinball": loss}, step=epoch)
                policies["pto_mqcnn"] = QuantileOrderUpTo(problem, forecaster, objective="reward")
                scored = split.history + split.warmup
                m = forecast_metrics(forecaster, test, scored, test.periods, levels, lead_time + 1)
                forecasts.append({"model": "mqcnn", "lead_time": lead_time, **m})
                m = moving_average_metrics(test, scored, test.periods, levels, lead_time + 1,
                                           f.moving_average_window)
                forecasts.append({"model": "moving_average", "lead_time": lead_time, **m})
            if "pto_moving_average" in f.policies:
                policies["pto_moving_average"] = MovingAverageOrderUpTo(problem, f.moving_average_window,
                                                                        objective="reward")

            plain.info("")
            log.info(f"L={lead_time}: scoring {', '.join(policies)} on the test periods ...")
            summary, weekly, trajectories = score(problem, policies, test, split, width, lead_time, dates)
            summaries.append(summary)
            weeklies.append(weekly)
            plain.info(summary.to_string(index=False, float_format=lambda v: f"{v:,.4f}"))
            plots = plot_lead_time(weekly, trajectories, test, split, dates, frequency, lead_time, f.plot_series)
            for file, fig in plots.items():
                fig.savefig(out / "plots" / file, dpi=110)
                tracker.log_figure(fig, f"plots/{file}")

        summary = pd.concat(summaries, ignore_index=True)[SUMMARY_COLUMNS]
        weekly = pd.concat(weeklies, ignore_index=True)
        summary.to_csv(out / "summary.csv", index=False)
        weekly.to_csv(out / "weekly.csv", index=False)
        tracker.log_table(summary, "summary")
        tracker.log_artifact(out / "weekly.csv", "results")
        if forecasts:
            forecast = pd.DataFrame(forecasts)
            forecast.to_csv(out / "forecast.csv", index=False)
            tracker.log_table(forecast, "forecast")
        tracker.log_metrics({f"test/L{r.lead_time}/{r.policy}/{k}": getattr(r, k)
                             for r in summary.itertuples() for k in ("reward", "avg_inventory", "fill_rate")})
    if f.docs:
        docs = resolve_path(f.docs)
        figures = {}
        for file in sorted((out / "plots").glob("*.png")):
            if file.name.startswith(("aggregate_", "christmas_")):
                target = docs.parent / "figures" / f"{cfg.name}-{file.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
                figures[file.stem] = target.relative_to(docs.parent)
        write_block(docs, f"favorita:{cfg.name}",
                    report(cfg, args, series.num_rows, periods, info, split, dates, fractile, summary,
                           pd.DataFrame(forecasts), figures, time.time() - started), header=TITLE)
        plain.info(f"Report:  {docs}")
    plain.info("\n" + summary.to_string(index=False, float_format=lambda v: f"{v:,.4f}"))
    plain.info(f"\nResults: {out}/summary.csv, weekly.csv, forecast.csv, plots/")
    plain.info(f"MLflow run: {run_id} at {tracker.uri}  ({time.time() - started:.0f}s)")
    return 0


def compare(summary, lead_time: int, ours: str, theirs: str) -> str | None:
    """One line: ``ours`` against ``theirs`` at a lead time, in reward, inventory, fill rate."""
    rows = summary[summary.lead_time == lead_time].set_index("policy")
    if ours not in rows.index or theirs not in rows.index:
        return None
    a, b = rows.loc[ours], rows.loc[theirs]
    verdict = ("higher reward, lower inventory, fill rate no lower"
               if a.reward > b.reward and a.avg_inventory < b.avg_inventory and a.fill_rate >= b.fill_rate
               else "not better on all three")
    return (f"- `{ours}` against `{theirs}`: reward {100 * (a.reward / b.reward - 1):+.2f}%, "
            f"average inventory {100 * (a.avg_inventory / b.avg_inventory - 1):+.1f}%, "
            f"fill rate {100 * (a.fill_rate - b.fill_rate):+.2f} points: **{verdict}**.")


def report(cfg, args, n_series, periods, info, split, dates, fractile, summary, forecast, figures,
           seconds) -> str:
    """This run's section of the markdown report: setup, results per lead time, forecast
    accuracy, figures (what they measure: docs/favorita.md, The study)."""
    f = cfg.favorita
    lines = [f"## {cfg.name}",
             "",
             f"Command: `python -m jobs.favorita {' '.join(args)}` ({seconds / 60:.0f} min on this machine). "
             f"Data: {n_series:,} series x {periods} periods from {dates[0]} ({info['source']}).",
             "",
             f"Time split: training periods 0-{split.train_end - 1} ({dates[0]} to {dates[split.train_end - 1]}), "
             f"validation {split.train_end}-{split.valid_end - 1}, test {split.valid_end}-{split.test_end - 1} "
             f"({dates[split.valid_end]} to {dates[split.test_end - 1]}), each scored range after "
             f"{split.history} periods of history and {split.warmup} of warm-up. Economics: price {f.price}, "
             f"unit cost {f.unit_cost}, holding cost {f.holding_cost} (critical fractile {fractile:.3f}). "
             f"DirectBackprop: {cfg.train.epochs} epochs (`directbackprop_sipn`: penalty weights "
             f"{list(cfg.penalty.weights)}); MQ-CNN: {f.forecast_epochs} epochs; moving average: "
             f"{f.moving_average_window} periods.",
             ""]
    shown = {"policy": "policy", "reward": "total reward", "avg_inventory": "average inventory",
             "fill_rate": "fill rate"}
    for lead_time, part in summary.groupby("lead_time", sort=True):
        lines += [f"### Lead time {lead_time}: test periods", "",
                  markdown_table(part[list(shown)].rename(columns=shown),
                                 {"total reward": ",.1f", "average inventory": ",.3f", "fill rate": ".4f"}), ""]
        lines += [c for c in (compare(summary, lead_time, ours, "pto_mqcnn")
                              for ours in ("directbackprop", "directbackprop_sipn")) if c]
        lines += [f"\n![{name}]({figures[name]})" for name in (f"aggregate_L{lead_time}", f"christmas_L{lead_time}")
                  if name in figures]
        lines.append("")
    if len(forecast):
        keys = [c for c in forecast.columns if c.startswith(("wql_", "coverage_"))] + ["mean_wql"]
        lines += ["### Forecast accuracy on the test periods", "",
                  markdown_table(forecast[["model", "lead_time", *keys]].rename(columns={"lead_time": "lead time"}),
                                 dict.fromkeys(keys, ".3f"))]
    lines.append(f"\nResults: `{f.output_dir}/summary.csv`, `weekly.csv`, `forecast.csv`, `plots/`.")
    return "\n".join(lines)


TITLE = "# Real retail demand: DirectBackprop against predict-then-optimize\n"  # of a new report


def plot_lead_time(weekly, trajectories, test, split, dates, frequency: str, lead_time: int,
                   n_series: int) -> dict:
    """The figures of one lead time: aggregates over the test periods, the periods around
    the first Christmas in them, and the largest series."""
    test_dates = dates[split.valid_end:split.test_end]
    title = f"all series, test periods, lead time {lead_time}"
    figs = {f"aggregate_L{lead_time}.png": weekly_aggregates(weekly, title)}
    xmas = np.nonzero(calendar_features(dates[0], len(dates), frequency)["christmas"])[0]
    xmas = [p for p in xmas if split.valid_end <= p < split.test_end]
    if xmas:
        around = 42 // period_days(frequency)  # six weeks either side
        figs[f"christmas_L{lead_time}.png"] = weekly_aggregates(
            weekly, f"around Christmas {str(dates[xmas[0]])[:4]}, lead time {lead_time}",
            (xmas[0] - around, xmas[0] + around))
    volume = test.demand[:, split.history + split.warmup:].sum(1)
    top = volume.argsort(descending=True)[:n_series].tolist()
    figs[f"series_L{lead_time}.png"] = series_sample(trajectories, test, split.history, split.warmup, test_dates,
                                                     top, [str(test.product_id[i]) for i in top])
    return figs
