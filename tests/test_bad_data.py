"""Bad product data: each case a clear ``DataError`` naming the file, the column and the
number of rows (``pipeline.data.validate_products``), as the jobs report it (one line, exit
code 2); the checker fuzzed with hypothesis. The long sales table's documented repairs
(gaps, duplicate weeks, negative weeks) are tested in tests/test_favorita_ingest.py."""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.parquet import read_products, validate_products
from pipeline.errors import DataError

N, T = 6, 20


def columns(n=N, periods=T, **changes):
    rng = np.random.default_rng(0)
    cols = {"product_id": pa.array(np.arange(n)),
            "demand": pa.array([rng.poisson(4, periods).astype(float).tolist() for _ in range(n)]),
            "lead_time": pa.array(np.full(n, 2)), "holding_cost": pa.array(np.ones(n)),
            "shortage_cost": pa.array(np.full(n, 9.0)), "unit_cost": pa.array(np.zeros(n)),
            "price": pa.array(np.zeros(n))}
    cols.update(changes)
    return {k: v for k, v in cols.items() if v is not None}


def write(folder, name="part-0.parquet", **changes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(pa.table(columns(**changes)), path)
    return path


def test_a_good_folder_passes_with_its_counts(tmp_path):
    write(tmp_path)
    write(tmp_path, "part-1.parquet", product_id=pa.array(np.arange(N, 2 * N)))
    pq.write_table(pa.table(columns()).slice(0, 0), tmp_path / "part-2.parquet")  # an empty shard
    assert validate_products(tmp_path, min_periods=T) == {"files": 3, "empty_files": 1, "products": 12, "periods": T}


@pytest.mark.parametrize("change, message", [
    ({"lead_time": None}, r"part-0.parquet: no column lead_time \(a product row has product_id, demand"),
    ({"demand": pa.array(["4"] * N)}, r"column demand has type string; expected a list of numbers"),
    ({"price": pa.array(["1.0"] * N)}, r"column price has type string; expected numbers"),
    ({"demand": pa.array([[1.0] * (T - 1) + [np.nan]] * 2 + [[1.0] * T] * (N - 2))},
     r"column demand: 2 rows with NaN or infinite values"),
    ({"holding_cost": pa.array([1.0, np.inf, 1, 1, 1, 1])}, r"column holding_cost: 1 rows with NaN or infinite"),
    ({"demand": pa.array([[-1.0] * T] * 3 + [[1.0] * T] * (N - 3))}, r"column demand: 3 rows with negative demand"),
    ({"lead_time": pa.array([0, -1, 2, 2, 2, 2])}, r"column lead_time: 1 rows with a negative lead_time"),
    ({"lead_time": pa.array([0.5, 1, 2, 2, 2, 2])}, r"column lead_time: 1 rows with a fractional lead time"),
    ({"product_id": pa.array([0, 1, 1, 2, 2, 2])}, r"column product_id: 3 duplicate rows \(2 products"),
    ({"demand": pa.array([[1.0] * 5] * N)}, r"column demand: 6 rows with histories shorter than 20 periods"),
    ({"demand": pa.array([[1.0] * T] * 3 + [[1.0] * (T + 4)] * 3)}, r"histories of different lengths \[20, 24\]"),
    ({"demand": pa.array([None] + [[1.0] * T] * (N - 1), pa.list_(pa.float64()))}, r"1 rows with no history"),
    # problem parameters given per product: the values problem.params accepts
    ({"waste_cost": pa.array([1.0, -2.0, 1, 1, -1, 1])},
     r"column waste_cost: 2 rows with values the problem refuses \(perishable: waste_cost must be >= 0"),
    ({"expedited_cost": pa.array([1.0, np.nan, 1, 1, 1, 1])}, r"column expedited_cost: 1 rows with NaN or infinite"),
    ({"issuing": pa.array(["fifo", "lifo", "lilo", "fifo", "fifo", "fifo"])},
     r"column issuing: 1 rows with values the problem refuses \(perishable: issuing must be one of fifo, lifo"),
    ({"shelf_life": pa.array([2, 2, 0, 2, 2, 2])}, r"column shelf_life: 1 rows with values the problem refuses"),
    ({"removal_value": pa.array([None, 1.0, 1, 1, 1, 1], pa.float64())}, r"column removal_value: 1 rows with no value"),
])
def test_each_bad_case_names_file_column_and_rows(tmp_path, change, message):
    write(tmp_path, **change)
    with pytest.raises(DataError, match=message):
        validate_products(tmp_path, min_periods=T)


@pytest.mark.parametrize("params, column", [({"shelf_life": 3}, {"shelf_life": [2, 3, 4, 3, 2, 4]}),
                                            ({"max_order": 10}, {"max_order": [10, 11, 1, 1, 1, 1]}),
                                            ({"expedited_lead_time": 1}, {"expedited_lead_time": [0, 1, 2, 1, 1, 1]})])
def test_a_structural_column_above_the_job_s_constant_is_refused(tmp_path, params, column):
    """The population constant of a structural parameter is its largest value; without the
    job's problem every value the problem accepts passes."""
    from pipeline.core.problems import PROBLEMS, get_problem
    (name, values), = column.items()
    write(tmp_path, **{name: pa.array(values)})
    problem = get_problem(next(k for k, cls in PROBLEMS.items() if name in cls.structural), params)
    n, top = sum(v > params[name] for v in values), params[name]
    with pytest.raises(DataError, match=rf"part-0.parquet: column {name}: {n} rows with values above "
                                        rf"problem.params.{name} = {top}, the largest value"):
        validate_products(tmp_path, min_periods=T, problem=problem)
    validate_products(tmp_path, min_periods=T)
    validate_products(tmp_path, min_periods=T, problem=get_problem(problem.name, {name: max(values)}))


def test_problem_parameter_columns_pass_and_load_per_product(tmp_path):
    write(tmp_path, waste_cost=pa.array([7.0, 3.0] * 3), issuing=pa.array(["fifo", "lifo"] * 3))
    assert validate_products(tmp_path, min_periods=T)["products"] == N
    batch = read_products(tmp_path)
    assert batch.params["waste_cost"].tolist() == [7.0, 3.0] * 3
    assert batch.params["issuing"].tolist() == ["fifo", "lifo"] * 3
    assert batch.select([1]).params["issuing"].tolist() == ["lifo"]


def test_missing_empty_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        validate_products(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="a: no Parquet files"):
        validate_products(tmp_path / "a")
    pq.write_table(pa.table(columns()).slice(0, 0), tmp_path / "a" / "empty.parquet")
    with pytest.raises(DataError, match=r"every Parquet file is empty \(1 files, no rows\)"):
        validate_products(tmp_path / "a")
    good = write(tmp_path / "b").read_bytes()
    (tmp_path / "b" / "part-0.parquet").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match=r"b/part-0.parquet: not a readable Parquet file \(ArrowInvalid"):
        validate_products(tmp_path / "b")
    (tmp_path / "b" / "part-0.parquet").write_bytes(b"PAR1" + bytes(200) + b"PAR1")  # corrupt
    with pytest.raises(DataError, match="not a readable Parquet file"):
        validate_products(tmp_path / "b")


def test_the_training_job_reports_bad_data_in_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    from jobs import _cli, train

    for split in ("train", "valid", "test"):
        write(tmp_path / "data" / split, periods=200)
    write(tmp_path / "data" / "valid", "part-1.parquet", periods=200, product_id=pa.array([5, 6, 7, 8, 9, 10]))
    monkeypatch.setattr(sys, "argv", ["train", f"data.path={tmp_path / 'data'}", f"output_dir={tmp_path / 'runs'}",
                                      f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"])
    with pytest.raises(SystemExit) as exit_:
        _cli.run("train", train.main)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'data' / 'valid'}: column product_id: 1 duplicate rows")


# ---------------------------------------------------------------- fuzz

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-3, 50).map(float))


@st.composite
def tables(draw):
    n = draw(st.integers(0, 5))
    lengths = draw(st.lists(st.integers(0, 8), min_size=n, max_size=n))
    cols = {"product_id": pa.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), pa.int64()),
            "demand": pa.array([draw(st.lists(numbers, min_size=k, max_size=k)) for k in lengths],
                               pa.list_(pa.float64())),
            "lead_time": pa.array(draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n)), pa.int64())}
    for name in ("holding_cost", "shortage_cost", "unit_cost", "price"):
        cols[name] = pa.array(draw(st.lists(numbers, min_size=n, max_size=n)), pa.float64())
    dropped = draw(st.sets(st.sampled_from(sorted(cols)), max_size=2)) if draw(st.booleans()) else set()
    return pa.table({k: v for k, v in cols.items() if k not in dropped})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables(), min_periods=st.integers(1, 6))
def test_fuzz_either_a_data_error_or_data_every_job_can_use(tmp_path, table, min_periods):
    """Any table: ``validate_products`` raises ``DataError`` (nothing else), or the data
    loads into a batch whose values are all finite and non-negative, one row per product,
    every history ``min_periods`` long."""
    path = tmp_path / "fuzz.parquet"
    pq.write_table(table, path)
    try:
        counts = validate_products(path, min_periods)
    except DataError as e:
        assert str(e).startswith(str(tmp_path)) and "\n" not in str(e)
        return
    batch = read_products(path)
    assert counts["products"] == batch.size == len(set(batch.product_id.tolist()))
    assert counts["periods"] == batch.periods >= min_periods
    for values in (batch.demand, batch.holding_cost, batch.shortage_cost, batch.unit_cost, batch.price):
        assert bool((values >= 0).all()) and bool(values.isfinite().all())
    assert bool((batch.lead_time >= 0).all())
