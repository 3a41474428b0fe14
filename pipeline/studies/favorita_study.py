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
from torch import Tensor

from pipeline.config import PROJECT_ROOT, ConfigError, load_config, resolve_path
from pipeline.errors import DataError
from pipeline.core.baselines import critical_fractile
from pipeline.core.batch import FEATURE_PREFIX, ProductBatch
from pipeline.core.forecast import (MovingAverageOrderUpTo, QuantileOrderUpTo, fit_forecaster, forecast_metrics,
                                    moving_average_metrics)
from pipeline.core.problems import get_problem
from pipeline.core.rollout import period_reward, rollout
from pipeline.data.calendar import calendar_features, period_dates, period_days
from pipeline.data.favorita_sources import long_sales_to_series
from pipeline.data.parquet import parquet_files, read_products, write_shards
from pipeline.data.retail import synthetic_retail
from pipeline.data.series import list_column, matrix, read_series
from pipeline.reporting import logs
from pipeline.reporting.plots import plt, series_sample, weekly_aggregates
from pipeline.reporting.report_blocks import write_block
from pipeline.studies.favorita_report import TITLE, combine, headline_metrics, report, report_figures
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

    @classmethod
    def of(cls, f, periods: int, history: int, warmup: int) -> "TimeSplit":
        """The split of ``favorita.*`` for data of ``periods`` periods: the explicit ends
        where set, else the last ``test_periods`` for the test and the ``valid_periods``
        before them for validation. Raises ``ConfigError`` when it does not fit the data."""
        test_end = f.test_end or periods
        valid_end = f.valid_end or test_end - f.test_periods
        train_end = f.train_end or valid_end - f.valid_periods
        split = cls(train_end, valid_end, test_end, history, warmup)
        if test_end > periods:
            raise ConfigError(f"favorita.test_end={test_end} is past the {periods} periods of the data")
        if not 0 < train_end < valid_end < test_end:
            raise ConfigError(f"the data's {periods} periods do not hold {f.valid_periods} validation and "
                              f"{f.test_periods} test periods (favorita.valid_periods, favorita.test_periods) "
                              f"after some training periods: train_end {train_end}, valid_end {valid_end}")
        if train_end - warmup - history < 0:
            raise ConfigError(f"the {train_end} training periods leave no room for {history} periods of history "
                              f"and {warmup} of warm-up before validation (eval.start, eval.warmup)")
        return split


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
    tables = [read_parquet_file(f) for f in files]
    if "demand" in tables[0].column_names:
        return read_series(path), {"source": str(path)}
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as e:
        raise DataError(f"{path}: its Parquet files do not share one schema ({str(e).splitlines()[0]})") from None
    try:
        table, counts = long_sales_to_series(table)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    return table, {"source": str(path), **counts}


def read_parquet_file(path: Path) -> pa.Table:
    """One Parquet file; a corrupt or truncated one is a ``DataError`` naming it."""
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable Parquet file ({reason})") from None


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
        reward = period_reward(traj, batch)[:, w]
        rows.append({"policy": name, "lead_time": lead_time, "reward": float(reward.sum()),
                     "avg_inventory": float(traj.held[:, w].mean()),
                     "fill_rate": float(traj.sales[:, w].sum() / traj.demand[:, w].sum().clamp_min(1e-9))})
        weekly.append(pd.DataFrame({
            "policy": name, "lead_time": lead_time, "period": np.arange(split.valid_end, split.test_end),
            "date": dates[split.valid_end:split.test_end],
            "demand": traj.demand[:, w].sum(0).numpy(), "sales": traj.sales[:, w].sum(0).numpy(),
            "orders": traj.orders[:, w].sum(0).numpy(), "inventory": traj.held[:, w].sum(0).numpy(),
            "lost": traj.lost[:, w].sum(0).numpy(), "reward": reward.sum(0).numpy()}))
        trajectories[name] = traj
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.concat(weekly, ignore_index=True), trajectories


SPIKES = 200           # the largest demand spikes of the test periods in the events table
SPIKE_BASELINE = 8     # ... each measured against the mean of the periods before it
CHRISTMAS_WINDOW = 21  # days either side of the period that holds 25 December


def spike_cells(batch: ProductBatch, split: TimeSplit, count: int = SPIKES) -> tuple[Tensor, Tensor]:
    """The ``count`` (series, scored period) cells of the test whose demand most exceeds
    the mean of the ``SPIKE_BASELINE`` periods before it: row and column indices (columns
    count from the first scored period)."""
    first = split.history + split.warmup
    past = batch.demand[:, first - SPIKE_BASELINE:-1].unfold(1, SPIKE_BASELINE, 1).mean(dim=2)
    excess = batch.demand[:, first:] - past
    top = excess.flatten().topk(min(count, excess.numel())).indices
    return top // excess.shape[1], top % excess.shape[1]


def christmas_window(split: TimeSplit, dates: np.ndarray, frequency: str) -> tuple[int, int] | None:
    """The first and last period within ``CHRISTMAS_WINDOW`` days of the first test period
    that holds 25 December (None: the test has none)."""
    xmas = np.nonzero(calendar_features(dates[0], len(dates), frequency)["christmas"])[0]
    xmas = [p for p in xmas if split.valid_end <= p < split.test_end]
    if not xmas:
        return None
    around = CHRISTMAS_WINDOW // period_days(frequency)
    return xmas[0] - around, xmas[0] + around


def event_table(trajectories: dict, weekly: pd.DataFrame, batch: ProductBatch, split: TimeSplit,
                dates: np.ndarray, frequency: str, lead_time: int) -> pd.DataFrame:
    """Per policy, the periods around the first Christmas of the test and the largest
    demand spikes (``spike_cells``): demand, sales, lost sales, fill rate, stock and reward
    (docs/favorita.md, Christmas and spikes). ``weekly``: ``score``'s per-period table with
    the column ``in_christmas`` (``christmas_window``)."""
    rows = []
    if weekly.in_christmas.any():
        window = weekly[weekly.in_christmas]
        year = str(window.date.iloc[len(window) // 2])[:4]
        for policy, part in window.groupby("policy", sort=False):
            rows.append({"event": f"christmas {year}", "policy": policy,
                         "demand": part.demand.sum(), "sales": part.sales.sum(), "lost": part.lost.sum(),
                         "fill_rate": part.sales.sum() / max(part.demand.sum(), 1e-9),
                         "stock": part.inventory.mean(), "reward": part.reward.sum()})
    rows_i, cols = spike_cells(batch, split)
    w = split.warmup
    for policy, traj in trajectories.items():
        held_before = traj.held[:, w - 1:-1]  # on hand at the end of the period before each scored one
        demand, sales = traj.demand[:, w:][rows_i, cols], traj.sales[:, w:][rows_i, cols]
        rows.append({"event": f"{len(cols)} largest spikes", "policy": policy,
                     "demand": float(demand.sum()), "sales": float(sales.sum()),
                     "lost": float(traj.lost[:, w:][rows_i, cols].sum()),
                     "fill_rate": float(sales.sum() / demand.sum().clamp_min(1e-9)),
                     "stock": float(held_before[rows_i, cols].sum()),
                     "reward": float(period_reward(traj, batch)[:, w:][rows_i, cols].sum())})
    table = pd.DataFrame(rows)
    table.insert(0, "lead_time", lead_time)
    return table


# ---------------------------------------------------------------- the study (jobs.favorita)

DIRECTBACKPROP = {"directbackprop": ["penalty.weights=[0.0]"], "directbackprop_sipn": []}
PTO = ("pto_mqcnn", "pto_moving_average")


def fold_stores(series: pa.Table, folds: int) -> list[np.ndarray]:
    """The data's stores, sorted, in ``folds`` contiguous groups of nearly equal size."""
    stores = np.unique(series.column("store").to_numpy())
    if len(stores) < folds:
        raise ConfigError(f"favorita.folds={folds} needs at least {folds} stores; the data has {len(stores)}")
    return np.array_split(stores, folds)


def select_stores(series: pa.Table, stores: np.ndarray) -> pa.Table:
    return series.filter(pa.array(np.isin(series.column("store").to_numpy(), stores)))


def store_names(stores: np.ndarray) -> str:
    """``0-6`` for a contiguous run of store numbers, else ``0,2,5``."""
    s = [int(x) for x in stores]
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 1 else ",".join(map(str, s))


@dataclass
class RunResult:
    """One fold and seed: per lead time, every policy's summary row, the per-period
    aggregates, the MQ-CNN pipeline's curve over service levels, the events table
    (Christmas and demand spikes) and the forecasters' accuracy."""
    summary: pd.DataFrame
    weekly: pd.DataFrame
    curve: pd.DataFrame
    events: pd.DataFrame
    forecast: pd.DataFrame
    fractile: float
    seconds: float = 0.0  # the run's wall time


def run(cfg, args: list[str]) -> int:
    """Every fold of the data's stores (``favorita.folds``, or just ``favorita.fold``) and
    every seed (``favorita.seeds``): ``run_one`` on that fold's series; then the tables of
    every run, their mean and spread, the plots, and the report when ``favorita.docs`` is
    set. Everything is written under ``favorita.output_dir`` (one folder per run, ``f<fold>-s<seed>``)
    and logged to one MLflow run with the training runs nested under it. ``args``: the
    command line, for the training runs' configs and the report."""
    log, plain = logs.get("favorita"), logs.get("")
    f = cfg.favorita
    if "directbackprop_sipn" in f.policies and max(cfg.penalty.weights) <= 0:
        raise ConfigError("penalty.weights must be > 0 for the directbackprop_sipn policy of jobs.favorita")
    torch.set_num_threads(cfg.train.cpus_per_worker)  # the forecaster's fit and the scoring, in this process
    started = time.time()
    out = resolve_path(f.output_dir)
    logs.get("data").info("loading series ...")
    series, info = load_series(f, cfg.retail, cfg.seed)
    periods = len(series.column("demand")[0])
    split = TimeSplit.of(f, periods, cfg.eval.start, cfg.eval.warmup)
    t = cfg.train
    if t.history + t.horizon > split.train_end:
        raise ConfigError(f"train.history + train.horizon = {t.history}+{t.horizon} must fit in the "
                          f"{split.train_end} training periods; see experiment=favorita")
    start_date = series.column("start_date")[0].as_py()
    frequency = str(series.column("frequency")[0])
    dates = period_dates(start_date, periods, frequency)
    logs.get("data").info(f"{series.num_rows} series x {periods} periods from {start_date} ({info['source']}); "
                          f"train periods 0-{split.train_end - 1}, validation {split.train_end}-{split.valid_end - 1}, "
                          f"test {split.valid_end}-{split.test_end - 1}")
    groups = fold_stores(series, f.folds)
    folds = [f.fold] if f.fold is not None else list(range(f.folds))
    seeds = list(f.seeds) or [cfg.seed]
    runs = [(k, seed) for k in folds for seed in seeds]

    tracker = Tracker(cfg)
    run_id = tracker.start(cfg, kind="favorita", data=resolve_path(f.data_path) if f.data_path else None,
                           tags={"study": "favorita"})
    results: dict[tuple[int, int], RunResult] = {}
    n_series = {}
    with tracker.ending():
        tracker.log_metrics({f"data/{k}": float(v) for k, v in info.items() if isinstance(v, (int, float))})
        for i, (k, seed) in enumerate(runs):
            part = select_stores(series, groups[k])
            n_series[k] = part.num_rows
            plain.info("")
            log.info(f"run {i + 1}/{len(runs)}: fold {k} (stores {store_names(groups[k])}, {part.num_rows} series), "
                     f"seed {seed}  ({time.time() - started:.0f}s so far)")
            tic = time.time()
            results[k, seed] = run_one(cfg, args, part, split, dates, frequency, k, seed, out / f"f{k}-s{seed}",
                                       run_id, tracker)
            results[k, seed].seconds = time.time() - tic
            tracker.log_metrics({f"run_seconds/f{k}-s{seed}": results[k, seed].seconds})
        tables = combine(results, groups)
        for name, table in tables.items():
            table.to_csv(out / f"{name}.csv", index=False)
            tracker.log_table(table, name)
        figures = report_figures(tables)
        (out / "plots").mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            fig.savefig(out / "plots" / f"{name}.png", dpi=110)
            tracker.log_figure(fig, f"plots/{name}.png")
            plt.close(fig)
        tracker.log_metrics(headline_metrics(tables["comparison"]))
    seconds = time.time() - started
    if f.docs:
        docs = resolve_path(f.docs)
        shown = {}
        for name in figures:
            target = docs.parent / "figures" / f"{cfg.name}-{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "plots" / f"{name}.png", target)
            shown[name] = target.relative_to(docs.parent)
        write_block(docs, f"favorita:{cfg.name}",
                    report(cfg, args, info, split, dates, groups, n_series, results, tables, shown, seconds),
                    header=TITLE)
        plain.info(f"Report:  {docs}")
    comparison = tables["comparison"]
    shown = comparison.reindex(columns=["fold", "seed", "lead_time", "policy", "best_pto", "reward_vs_best_pto_pct",
                                        "inventory_vs_best_pto_pct", "fill_vs_mqcnn_points", "target_met"])
    plain.info("\n" + (shown.to_string(index=False, float_format=lambda v: f"{v:+.2f}") if len(shown)
                        else tables["summary"].to_string(index=False)))
    plain.info(f"\nResults: {out}/summary.csv, comparison.csv, curve.csv, events.csv, plots/, and one folder per run")
    plain.info(f"MLflow run: {run_id} at {tracker.uri}  ({seconds:.0f}s)")
    return 0


def run_one(cfg, args: list[str], series: pa.Table, split: TimeSplit, dates: np.ndarray, frequency: str,
            fold: int, seed: int, out: Path, parent_run_id: str, tracker: Tracker) -> RunResult:
    """For each lead time in ``favorita.lead_times``: the time split of ``series``,
    DirectBackprop trained (``training_run.train``, plain and with the structure penalty,
    each an MLflow run nested under ``parent_run_id``), the quantile forecaster of
    predict-then-optimize fitted on the training periods, and every policy scored on the
    same test periods (the MQ-CNN pipeline also at ``favorita.curve_levels``)."""
    log, plain = logs.get("favorita"), logs.get("")
    f = cfg.favorita
    label = f"f{fold}-s{seed}"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    problem = get_problem("lost_sales", {})
    summaries, weeklies, curves, events, forecasts = [], [], [], [], []
    forecaster, fractile, levels = None, float("nan"), []
    for lead_time in f.lead_times:
        width = problem.state_width(lead_time)
        splits = write_splits(series, split, lead_time, f, out / "data" / f"L{lead_time}", cfg.data.shard_rows)
        train_batch, test = read_products(splits["train"]), read_products(splits["test"])
        policies = {}
        for name, extra in DIRECTBACKPROP.items():
            if name not in f.policies:
                continue
            run_args = args + [f"seed={seed}", f"name={cfg.name}-{label}-L{lead_time}-{name}",
                               f"output_dir={out / 'runs'}", f"data.path={splits['train'].parent}",
                               f"data.periods={split.train_end}", f"data.lead_time_range=[{lead_time},{lead_time}]",
                               "problem.name=lost_sales", "problem.objective=reward", "eval.baselines=[]"] + extra
            plain.info("")
            log.info(f"{label} L={lead_time}: training {name}: python -m jobs.train {' '.join(run_args)}")
            result = train(load_config(run_args), parent_run_id=parent_run_id)
            plain.info(result.footer)
            policies[name] = result.policy
        fractile = float(critical_fractile(test, "reward")[0])
        if "pto_mqcnn" in f.policies:
            if forecaster is None:  # one forecaster for every lead time: horizons up to the longest
                log.info(f"{label}: fitting the quantile forecaster ({f.forecast_epochs} epochs) ...")
                levels = sorted({*f.quantiles, *f.curve_levels, round(fractile, 6)})
                forecaster, history = fit_forecaster(
                    train_batch, split.train_end, levels, max(f.lead_times) + 1, epochs=f.forecast_epochs,
                    lr=f.forecast_lr, seed=seed, channels=cfg.policy.channels,
                    dilations=tuple(cfg.policy.dilations),  # the same receptive field as the policy's CNN
                    progress=lambda epoch, loss: (epoch + 1) % 10 == 0 and plain.info(
                        f"  epoch {epoch + 1}/{f.forecast_epochs}  pinball loss {loss:.4f}"))
                for epoch, loss in enumerate(history):
                    tracker.log_metrics({f"forecast/{label}/train_pinball": loss}, step=epoch)
            policies["pto_mqcnn"] = QuantileOrderUpTo(problem, forecaster, objective="reward")
            scored = split.history + split.warmup
            m = forecast_metrics(forecaster, test, scored, test.periods, levels, lead_time + 1)
            forecasts.append({"model": "mqcnn", "lead_time": lead_time, **m})
            m = moving_average_metrics(test, scored, test.periods, levels, lead_time + 1, f.moving_average_window)
            forecasts.append({"model": "moving_average", "lead_time": lead_time, **m})
        if "pto_moving_average" in f.policies:
            policies["pto_moving_average"] = MovingAverageOrderUpTo(problem, f.moving_average_window,
                                                                    objective="reward")

        log.info(f"{label} L={lead_time}: scoring {', '.join(policies)} on the test periods ...")
        summary, weekly, trajectories = score(problem, policies, test, split, width, lead_time, dates)
        xmas = christmas_window(split, dates, frequency)
        weekly["in_christmas"] = weekly.period.between(*xmas) if xmas else False
        summaries.append(summary)
        weeklies.append(weekly)
        plain.info(summary.to_string(index=False, float_format=lambda v: f"{v:,.4f}"))
        if forecaster is not None:
            curve, _, _ = score(problem, {level: QuantileOrderUpTo(problem, forecaster, "reward", level=level)
                                          for level in f.curve_levels}, test, split, width, lead_time, dates)
            curves.append(curve.rename(columns={"policy": "level"}))
        events.append(event_table(trajectories, weekly, test, split, dates, frequency, lead_time))
        plots = plot_lead_time(weekly, trajectories, test, split, dates, frequency, lead_time, f.plot_series)
        for file, fig in plots.items():
            fig.savefig(out / "plots" / file, dpi=110)
            tracker.log_figure(fig, f"plots/{label}/{file}")
            plt.close(fig)

    def tagged(parts):
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        table.insert(0, "seed", seed)
        table.insert(0, "fold", fold)
        return table

    result = RunResult(tagged(summaries), tagged(weeklies), tagged(curves), tagged(events),
                       tagged([pd.DataFrame(forecasts)]), fractile)
    for name in ("summary", "weekly", "curve", "events", "forecast"):
        getattr(result, name).to_csv(out / f"{name}.csv", index=False)
    tracker.log_metrics({f"test/{label}/L{r.lead_time}/{r.policy}/{k}": getattr(r, k)
                         for r in result.summary.itertuples() for k in ("reward", "avg_inventory", "fill_rate")})
    return result


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
