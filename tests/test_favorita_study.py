"""The retail comparison (jobs.favorita): the time split, the training layout it writes,
the scoring against hand-computed numbers, and the job end to end on tiny data."""
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from jobs import favorita
from pipeline.core.baselines import BaseStockPolicy
from pipeline.config import load_config
from pipeline.data.parquet import read_products
from pipeline.config import ConfigError
from pipeline.errors import DataError
from pipeline.studies.favorita_study import (SUMMARY_COLUMNS, TimeSplit, fold_stores, score, select_stores,
                                             spike_cells, store_names, training_table, write_splits)
from pipeline.core.problems import get_problem
from pipeline.data.series import series_table
from pipeline.studies.favorita_report import versus
from pipeline.adapters.tracking import PARENT_TAG, RUN_NAME_TAG

SPLIT = TimeSplit(train_end=70, valid_end=85, test_end=110, history=40, warmup=4)


def test_time_split_scores_each_range_after_its_history_and_warmup():
    assert SPLIT.window("train") == (0, 70)
    assert SPLIT.window("valid") == (70 - 44, 85)  # scored 70..84
    assert SPLIT.window("test") == (85 - 44, 110)  # scored 85..109


def test_time_split_from_the_end_of_any_data():
    f = load_config(["experiment=favorita"]).favorita
    assert TimeSplit.of(f, 171, 40, 4) == TimeSplit(106, 118, 171, 40, 4)  # the shared file's weeks
    assert TimeSplit.of(f, 150, 40, 4) == TimeSplit(85, 97, 150, 40, 4)    # a file that starts later
    explicit = load_config(["favorita.train_end=70", "favorita.valid_end=85", "favorita.test_end=110"]).favorita
    assert TimeSplit.of(explicit, 120, 40, 4) == SPLIT
    with pytest.raises(ConfigError, match="test_end=110 is past the 100 periods"):
        TimeSplit.of(explicit, 100, 40, 4)
    with pytest.raises(ConfigError, match="do not hold 12 validation and 53 test periods"):
        TimeSplit.of(f, 60, 40, 4)
    with pytest.raises(ConfigError, match="leave no room for 40 periods of history"):
        TimeSplit.of(f, 100, 40, 4)  # 35 training periods


def test_store_folds_are_disjoint_contiguous_and_cover_every_store():
    stores = np.array([5, 3, 3, 9, 1, 7, 5, 2], dtype=np.int32)
    series = series_table(np.zeros((8, 4), np.float32), "2013-01-01", "weekly", np.arange(8), store=stores)
    groups = fold_stores(series, 2)
    assert [g.tolist() for g in groups] == [[1, 2, 3], [5, 7, 9]]
    assert select_stores(series, groups[0]).column("product_id").to_pylist() == [1, 2, 4, 7]
    assert store_names(groups[0]) == "1-3" and store_names(groups[1]) == "5,7,9"
    with pytest.raises(ConfigError, match="favorita.folds=7 needs at least 7 stores; the data has 6"):
        fold_stores(series, 7)


def tiny_series(n=3, periods=110):
    demand = np.arange(n * periods, dtype=np.float32).reshape(n, periods) % 7
    promo = (np.arange(periods) % 10 == 0)[None].repeat(n, 0).astype(np.float32)
    return series_table(demand, "2013-01-01", "weekly", np.arange(n), features={"promo": promo})


def test_training_layout_slices_every_series_and_adds_the_economics(tmp_path):
    fcfg = load_config(["favorita.price=2.0", "favorita.unit_cost=1.2", "favorita.holding_cost=0.1"]).favorita
    series = tiny_series()
    table = training_table(series, 41, 110, 2, fcfg)
    assert table.num_rows == 3 and len(table.column("demand")[0]) == 69
    assert table.column("demand")[1].as_py()[0] == (110 + 41) % 7
    assert set(table.column("price").to_pylist()) == {2.0} and set(table.column("shortage_cost").to_pylist()) == {0.0}
    assert set(table.column("lead_time").to_pylist()) == {2}
    splits = write_splits(series, SPLIT, 2, fcfg, tmp_path, shard_rows=2)
    test = read_products(splits["test"])
    assert test.periods == 69 and test.size == 3
    assert "promo" in test.feature_names and "christmas" in test.feature_names
    assert float(test.feature(["promo"])[0, 9, 0]) == 1.0  # period 41 + 9 = 50 is a promotion
    assert read_products(splits["train"]).periods == 70 and read_products(splits["valid"]).periods == 59


def test_score_against_hand_computed_reward_inventory_and_fill_rate():
    """Constant demand 4, lead time 0, order up to 6: after the first period 2 units are
    left every period, so each period orders 4, sells 4 and holds 2."""
    fcfg = load_config(["favorita.price=1.0", "favorita.unit_cost=0.5", "favorita.holding_cost=0.1"]).favorita
    n, periods = 2, 110
    series = series_table(np.full((n, periods), 4.0, np.float32), "2013-01-01", "weekly", np.arange(n))
    first, stop = SPLIT.window("test")
    batch = read_products_from(training_table(series, first, stop, 0, fcfg))
    problem = get_problem("lost_sales", {})
    dates = np.arange(periods)
    summary, weekly, _ = score(problem, {"base_stock": BaseStockPolicy(problem, torch.full((n,), 6.0))},
                               batch, SPLIT, 1, 0, dates)
    assert list(summary.columns) == SUMMARY_COLUMNS
    row = summary.iloc[0]
    scored = n * (SPLIT.test_end - SPLIT.valid_end)
    assert row.reward == pytest.approx(scored * (4 * 1.0 - 4 * 0.5 - 2 * 0.1), rel=1e-6)
    assert row.avg_inventory == pytest.approx(2.0) and row.fill_rate == pytest.approx(1.0)
    assert weekly.period.tolist() == list(range(85, 110)) and weekly.demand.tolist() == [8.0] * 25


def read_products_from(table):
    from pipeline.core.batch import batch_from_columns

    return batch_from_columns({k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names})


def child_runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id])


def test_job_end_to_end_on_synthetic_retail_over_two_store_folds(tmp_path, ray_session):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "fav"
    args = ["experiment=favorita_smoke", f"output_dir={out}", f"mlflow.tracking_uri={uri}", "mlflow.experiment=fav",
            "favorita.lead_times=[0,1]", "favorita.folds=2", "favorita.seeds=[3]", "retail.num_series=32",
            "data.shard_rows=16"]
    assert favorita.main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["fold", "seed", "stores", *SUMMARY_COLUMNS]
    assert len(summary) == 16 and set(summary.lead_time) == {0, 1} and set(summary.seed) == {3}
    assert set(summary.policy) == {"directbackprop", "directbackprop_sipn", "pto_mqcnn", "pto_moving_average"}
    assert summary.fill_rate.between(0, 1).all() and np.isfinite(summary.reward).all()
    # synthetic retail: store = series % 50, so 32 series are stores 0-31 and the folds 0-15 and 16-31
    assert set(summary[summary.fold == 0].stores) == {",".join(map(str, range(16)))}
    for k in (0, 1):
        run = out / f"f{k}-s3"
        weekly = pd.read_csv(run / "weekly.csv")
        assert sorted(set(weekly.period)) == list(range(85, 110))  # test periods: valid_end .. the end
        assert {p.name for p in (run / "plots").iterdir()} >= {"aggregate_L0.png", "series_L1.png"}
        assert (run / "runs" / f"favorita-smoke-f{k}-s3-L1-directbackprop_sipn" / "checkpoints" / "best").is_dir()
    forecast = pd.read_csv(out / "forecast.csv")
    assert {"mean_wql", "coverage_0.5"} <= set(forecast.columns) and len(forecast) == 8
    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 8 and {"reward_vs_best_pto_pct", "above_mqcnn_curve", "target_met"} <= set(
        comparison.columns)
    curve = pd.read_csv(out / "curve.csv")
    levels = load_config(["experiment=favorita_smoke"]).favorita.curve_levels
    assert len(curve) == 2 * 2 * len(levels) and set(curve.level) == set(levels)
    events = pd.read_csv(out / "events.csv")
    assert set(events.event) >= {"200 largest spikes"} and events.fill_rate.between(0, 1).all()
    assert {p.name for p in (out / "plots").iterdir()} == {"curve_L0.png", "curve_L1.png", "events_L0.png",
                                                            "events_L1.png"}
    client, runs = child_runs(uri, "fav")
    parent = [r for r in runs if r.data.tags[RUN_NAME_TAG] == "favorita-smoke"][0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert parent.data.metrics["test/f1-s3/L1/pto_mqcnn/fill_rate"] == pytest.approx(
        float(summary.query("fold == 1 and lead_time == 1 and policy == 'pto_mqcnn'").fill_rate.iloc[0]))


def test_job_reads_any_long_sales_parquet_and_moves_its_results(tmp_path):
    """data.path in the schema of favorita_weekly/sales.parquet, with stores and items of
    its own; only the predict-then-optimize policies (no training)."""
    rng = np.random.default_rng(0)
    weeks = pd.date_range("2014-03-04", periods=100, freq="7D")
    rows = [(f"s{s}-i{i}", s, i, w, float(rng.poisson(5 + s))) for s in (3, 77) for i in (5, 900) for w in weeks]
    long = pd.DataFrame(rows, columns=["series_id", "store", "item", "week", "units"])
    long["week"] = long.week.dt.date
    path = tmp_path / "sales.parquet"
    pq.write_table(pa.Table.from_pandas(long, preserve_index=False), path)
    out = tmp_path / "elsewhere"
    args = ["experiment=favorita_smoke", f"data.path={path}",
            f"output_dir={out}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}",
            "favorita.policies=[pto_mqcnn,pto_moving_average]", "favorita.lead_times=[0]",
            "favorita.train_end=66", "favorita.valid_end=75", "data.periods=66"]
    assert favorita.main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary.policy.tolist() == ["pto_mqcnn", "pto_moving_average"] and (summary.fill_rate > 0.5).all()
    assert set(summary.stores) == {"3,77"}
    weekly = pd.read_csv(out / "f0-s0" / "weekly.csv")
    assert weekly.date.min() == str((weeks[75]).date()) and weekly.period.max() == 99
    # nothing outside output_dir but the tracking store (m.db and its artifact folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "m.db", "mlartifacts", "sales.parquet"]


def test_job_defaults_run_the_papers_comparison_and_write_no_report():
    cfg = load_config(["experiment=favorita"])
    assert cfg.favorita.docs is None and cfg.train.keep == "last" and cfg.train.stock_at_cost
    # no experiment= given: the paper's settings, so a missing file is the error, not the config
    with pytest.raises(FileNotFoundError, match="no Parquet data at /nonexistent/sales.parquet"):
        favorita.main(["data.path=/nonexistent/sales.parquet"])


def test_a_corrupt_or_truncated_parquet_file_is_one_line_naming_it(tmp_path):
    import subprocess
    import sys

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"series_id": ["s0-i0"], "store": [0], "item": [0], "week": pa.array(["2013-01-01"]).cast(pa.date32()),
                             "units": [1.0]}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:-20])  # the footer cut off
    with pytest.raises(DataError, match=f"{bad}: not a readable Parquet file"):
        favorita.main([f"data.path={bad}"])
    proc = subprocess.run([sys.executable, "-m", "jobs.favorita", f"data.path={bad}"], capture_output=True,
                          text=True, cwd=Path(favorita.__file__).parents[1], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: " + proc.stderr.split(f"{bad}: ", 1)[1].strip()]


def test_job_rejects_rollouts_longer_than_the_training_periods():
    with pytest.raises(ConfigError, match=r"train.history \+ train.horizon = 40\+70 must fit in the 70 training"):
        favorita.main(["experiment=favorita_smoke", "train.horizon=70", "data.periods=120"])


def test_the_largest_spikes_are_measured_against_the_periods_before():
    demand = torch.full((3, 60), 2.0)
    demand[1, 50] = 30.0  # a spike of 28 over the 8 periods before
    demand[2, 55] = 12.0
    batch = read_products_from(training_table(series_table(demand.numpy(), "2013-01-01", "weekly", np.arange(3)),
                                              0, 60, 0, load_config([]).favorita))
    split = TimeSplit(10, 20, 60, history=40, warmup=4)  # scored columns count from period 44
    rows, cols = spike_cells(batch, split, count=2)
    assert rows.tolist() == [1, 2] and cols.tolist() == [50 - 44, 55 - 44]


def versus_inputs(dbp, mq, ma, curve_points):
    by = pd.DataFrame([dbp, mq, ma], columns=["reward", "avg_inventory", "fill_rate"],
                      index=["directbackprop", "pto_mqcnn", "pto_moving_average"])
    curve = pd.DataFrame(curve_points, columns=["avg_inventory", "fill_rate"])
    return by, curve


def test_targets_need_more_reward_than_both_pipelines_less_stock_and_the_service():
    # MQ-CNN's curve through (10, 0.90), (20, 0.95) and its own point (30, 0.97)
    points = [(10, 0.90), (20, 0.95)]
    by, curve = versus_inputs((105, 15, 0.93), (100, 30, 0.97), (101, 16, 0.92), points)
    out = versus(by, "directbackprop", curve, 0)
    assert out["best_pto"] == "pto_moving_average" and out["reward_vs_best_pto_pct"] == pytest.approx(100 * 4 / 101)
    assert out["above_mqcnn_curve"] and out["target_met"]  # 0.93 >= 0.925 at 15 units; less stock than MA's 16
    by, curve = versus_inputs((105, 15, 0.92), (100, 30, 0.97), (101, 16, 0.92), points)
    assert not versus(by, "directbackprop", curve, 0)["above_mqcnn_curve"]  # 0.92 < 0.925
    assert not versus(by, "directbackprop", curve, 0)["target_met"]
    by, curve = versus_inputs((105, 17, 0.98), (100, 30, 0.97), (101, 16, 0.92), points)
    assert not versus(by, "directbackprop", curve, 0)["target_met"]  # more stock than the best pipeline
    # lead time 2: more reward than both, less stock than MQ-CNN's
    assert versus(by, "directbackprop", curve, 2)["target_met"]
    by, curve = versus_inputs((100.5, 17, 0.98), (100, 30, 0.97), (101, 16, 0.92), points)
    assert not versus(by, "directbackprop", curve, 2)["target_met"]
