"""The synthetic population and the Parquet round trip."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.core.batch import batch_from_columns
from pipeline.data.synthetic import materialize, synthetic_population
from pipeline.data.parquet import read_products


def small_data(**over):
    cfg = load_config(["experiment=smoke"]).data
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_population_is_deterministic_by_seed_and_respects_ranges():
    cfg = small_data(num_products=300, lead_time_range=[1, 3], shortage_cost_range=[4.0, 9.0])
    a, b, c = synthetic_population(cfg, 1), synthetic_population(cfg, 1), synthetic_population(cfg, 2)
    assert np.array_equal(a["demand"], b["demand"]) and not np.array_equal(a["demand"], c["demand"])
    assert set(np.unique(a["lead_time"])) == {1, 2, 3}
    assert a["shortage_cost"].min() >= 4 and a["shortage_cost"].max() <= 9
    assert set(np.unique(a["true_dist"])) == {"poisson", "negbin", "zip"}
    assert np.array_equal(a["demand"], np.round(a["demand"])) and a["demand"].min() >= 0


def test_sample_means_follow_the_drawn_means():
    cfg = small_data(num_products=60, periods=4000)
    cols = synthetic_population(cfg, 0)
    ratio = cols["demand"].mean(1) / cols["true_mean"]
    assert np.all(np.abs(ratio - 1) < 0.15)
    zip_rows = cols["true_dist"] == "zip"
    zero_share = (cols["demand"][zip_rows] == 0).mean(1)
    assert np.all(zero_share >= cols["true_shape"][zip_rows] - 0.05)


def test_splits_written_once_as_parquet_and_read_back(tmp_path):
    cfg = small_data()
    splits = materialize(cfg, 0, tmp_path)
    sizes = {k: pq.read_table(v).num_rows for k, v in splits.items()}
    assert sum(sizes.values()) == cfg.num_products and sizes["test"] == 12 and sizes["valid"] == 6
    batch = read_products(splits["train"])
    assert batch.demand.shape == (42, cfg.periods)
    ids = set()
    for name in splits:
        ids |= set(read_products(splits[name]).product_id.tolist())
    assert ids == set(range(cfg.num_products))  # disjoint, complete
    stamp = (splits["train"] / "part-00000.parquet").stat().st_mtime_ns
    assert materialize(cfg, 0, tmp_path) == splits  # reused, not rewritten
    assert (splits["train"] / "part-00000.parquet").stat().st_mtime_ns == stamp


def test_batch_from_ray_style_object_columns():
    demand = np.empty(2, dtype=object)
    demand[0], demand[1] = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    cols = {"product_id": [0, 1], "demand": demand, "holding_cost": [1, 1], "shortage_cost": [4, 4],
            "unit_cost": [0, 0], "price": [0, 0], "lead_time": [0, 2], "true_dist": ["poisson"] * 2,
            "true_mean": [1.5, 3.5], "true_shape": [0, 0]}
    batch = batch_from_columns(cols)
    assert batch.demand.tolist() == [[1, 2], [3, 4]] and batch.lead_time.tolist() == [0, 2]
    demand[1] = np.array([1.0])
    with pytest.raises(ValueError, match="different lengths"):
        batch_from_columns(cols)


def test_missing_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="must hold train/, valid/ and test/"):
        materialize(small_data(path=str(tmp_path)), 0, tmp_path)
