"""The retail comparison (jobs.favorita): the time split, the training layout it writes,
the scoring against hand-computed numbers, and the job end to end on tiny data."""
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
from pipeline.studies.favorita_study import SUMMARY_COLUMNS, TimeSplit, score, training_table, write_splits
from pipeline.core.problems import get_problem
from pipeline.data.series import series_table
from pipeline.adapters.tracking import PARENT_TAG, RUN_NAME_TAG

SPLIT = TimeSplit(train_end=70, valid_end=85, test_end=110, history=40, warmup=4)


def test_time_split_scores_each_range_after_its_history_and_warmup():
    assert SPLIT.window("train") == (0, 70)
    assert SPLIT.window("valid") == (70 - 44, 85)  # scored 70..84
    assert SPLIT.window("test") == (85 - 44, 110)  # scored 85..109
    with pytest.raises(ValueError, match="test_end=110 is past the 100 periods"):
        SPLIT.check(100)
    with pytest.raises(ValueError, match="leaves no room for 40 periods of history"):
        TimeSplit(30, 40, 50, 40, 4).check(60)


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


def test_job_end_to_end_on_synthetic_retail(tmp_path, ray_session):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "fav"
    args = ["experiment=favorita_smoke", f"output_dir={out}",
            f"mlflow.tracking_uri={uri}", "mlflow.experiment=fav", "favorita.lead_times=[0,1]",
            "retail.num_series=32", "data.shard_rows=16"]
    assert favorita.main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["policy", "lead_time", "reward", "avg_inventory", "fill_rate"]
    assert len(summary) == 8 and set(summary.lead_time) == {0, 1}
    assert set(summary.policy) == {"directbackprop", "directbackprop_sipn", "pto_mqcnn", "pto_moving_average"}
    assert summary.fill_rate.between(0, 1).all() and np.isfinite(summary.reward).all()
    weekly = pd.read_csv(out / "weekly.csv")
    assert sorted(set(weekly.period)) == list(range(85, 110))  # test periods: valid_end .. the end
    forecast = pd.read_csv(out / "forecast.csv")
    assert {"mean_wql", "coverage_0.5"} <= set(forecast.columns) and len(forecast) == 4
    assert {p.name for p in (out / "plots").iterdir()} >= {"aggregate_L0.png", "christmas_L1.png", "series_L1.png"}
    client, runs = child_runs(uri, "fav")
    parent = [r for r in runs if r.data.tags[RUN_NAME_TAG] == "favorita-smoke"][0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert (out / "runs" / "favorita-smoke-L1-directbackprop_sipn" / "checkpoints" / "best").is_dir()
    assert parent.data.metrics["test/L1/pto_mqcnn/fill_rate"] == pytest.approx(
        float(summary.query("lead_time == 1 and policy == 'pto_mqcnn'").fill_rate.iloc[0]))


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
    weekly = pd.read_csv(out / "weekly.csv")
    assert weekly.date.min() == str((weeks[75]).date()) and weekly.period.max() == 99


def test_job_rejects_rollouts_longer_than_the_training_periods():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.history \+ train.horizon = 40\+70 must fit in the 70 training"):
        favorita.main(["experiment=favorita_smoke", "train.horizon=70", "data.periods=120"])
