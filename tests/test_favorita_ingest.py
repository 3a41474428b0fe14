"""Favorita ingestion: raw Kaggle files (Ray Data job), the weekly long table, the CLI."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import prepare_data
from pipeline.config import PROJECT_ROOT, ConfigError
from pipeline.errors import DataError
from pipeline.data.favorita_sources import convert_raw, convert_weekly_sales, long_sales_to_series
from pipeline.data.series import matrix, read_manifest, read_series

SHARED_SALES = PROJECT_ROOT.parent / "shared" / "data" / "favorita_weekly" / "sales.parquet"

# 2013-01-01 is a Tuesday: week 0 = days 0-6, week 1 = days 7-13, day 14 (01-15) a partial week.
TRAIN = """id,date,store_nbr,item_nbr,unit_sales,onpromotion
0,2013-01-01,1,100,5.0,
1,2013-01-01,2,100,3.0,
2,2013-01-02,1,100,-2.0,
4,2013-01-03,1,200,9.0,False
3,2013-01-03,1,200,4.5,True
5,2013-01-08,1,100,1.0,True
6,2013-01-09,2,100,,False
9,2013-01-10,3,300,2.5,True
10,2013-01-12,1,100,2.0,True
7,2013-01-14,2,200,2.0,True
8,2013-01-15,2,200,7.0,True
11,2013-01-05,1,,3.0,False
"""
ITEMS = "item_nbr,family,class,perishable\n100,BREAD/BAKERY,2712,1\n200,GROCERY I,1010,0\n"
STORES = "store_nbr,city,state,type,cluster\n1,Quito,Pichincha,D,13\n2,Cuenca,Azuay,D,2\n"
HOLIDAYS = """date,type,locale,locale_name,description,transferred
2012-12-25,Holiday,National,Ecuador,Navidad,False
2013-01-01,Holiday,National,Ecuador,Primer dia del ano,False
2013-01-02,Holiday,Local,Quito,Fundacion,False
2013-01-03,Holiday,Regional,Azuay,Provincia,False
2013-01-04,Holiday,National,Ecuador,Trasladado,True
2013-01-05,Work Day,National,Ecuador,Recupero,False
2013-01-09,Transfer,National,Ecuador,Traslado,False
2013-01-09,Holiday,Local,Quito,Mismo dia,False
2013-01-10,Holiday,Regional,Pichincha,Provincia,False
2013-01-11,Event,Local,Cuenca,Fiesta,False
2013-01-12,Additional,Local,Quito,Puente,False
"""
# product ids follow (store, item): s1-i100, s1-i200, s2-i100, s2-i200, s3-i300
# (store 3 is not in stores.csv: national holidays only; item 300 not in items.csv)


def write_raw(folder, train=TRAIN):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {"train.csv": train, "items.csv": ITEMS, "stores.csv": STORES,
                       "holidays_events.csv": HOLIDAYS}.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def raw(tmp_path):
    return write_raw(tmp_path / "raw")


def test_convert_raw_daily(ray_session, raw, tmp_path):
    out = tmp_path / "daily"
    info = convert_raw(raw, out, "daily", buckets=3, progress=lambda _: None)
    assert info == read_manifest(out)
    assert {k: info[k] for k in ("start_date", "end_date", "periods", "series", "rows_read", "missing_sales_rows",
                                 "missing_key_rows", "rows_before_start", "rows_after_end", "duplicate_rows", "negative_rows",
                                 "negative_units", "promo_missing_rows", "series_unknown_store",
                                 "series_unknown_item")} == {
        "start_date": "2013-01-01", "end_date": "2013-01-15", "periods": 15, "series": 5, "rows_read": 12,
        "missing_sales_rows": 1, "missing_key_rows": 1, "rows_before_start": 0, "rows_after_end": 0, "duplicate_rows": 1,
        "negative_rows": 1, "negative_units": 2.0, "promo_missing_rows": 3, "series_unknown_store": 1,
        "series_unknown_item": 1}
    assert 1 <= len(list(out.glob("part-*.parquet"))) <= 3
    t = read_series(out)
    assert t.column("product_id").to_pylist() == [0, 1, 2, 3, 4]
    assert t.column("series_id").to_pylist() == ["s1-i100", "s1-i200", "s2-i100", "s2-i200", "s3-i300"]
    assert t.column("perishable").to_pylist() == [1, 0, 1, 0, 0]
    assert t.column("family").to_pylist() == ["BREAD/BAKERY", "GROCERY I", "BREAD/BAKERY", "GROCERY I", ""]
    assert t.column("first_period").to_pylist() == [0, 2, 0, 13, 9]
    assert set(t.column("frequency").to_pylist()) == {"daily"}
    demand = np.zeros((5, 15))
    demand[0, [0, 7, 11]] = [5, 1, 2]  # day 1: a return (-2) counts as 0
    demand[1, 2] = 9                   # duplicate on day 2: id 4 (the larger) kept, though first in the file
    demand[2, 0] = 3                   # day 8 has no unit_sales: dropped, zero
    demand[3, [13, 14]] = [2, 7]
    demand[4, 9] = 2.5
    np.testing.assert_array_equal(matrix(t, "demand"), demand)
    promo = np.zeros((5, 15))
    promo[0, [7, 11]] = promo[3, [13, 14]] = promo[4, 9] = 1  # id 3's True lost with its duplicate
    np.testing.assert_array_equal(matrix(t, "feature_promo"), promo)
    holiday = np.zeros((5, 15))
    holiday[[0, 1]] = np.isin(np.arange(15), [0, 1, 8, 9, 11])  # Quito, Pichincha: national, local, regional
    holiday[[2, 3]] = np.isin(np.arange(15), [0, 2, 8, 10])     # Cuenca, Azuay
    holiday[4] = np.isin(np.arange(15), [0, 8])                 # unknown store: national only
    np.testing.assert_array_equal(matrix(t, "feature_holiday"), holiday)
    assert {"feature_week_sin", "feature_christmas"} <= set(t.column_names)


def test_convert_raw_weekly_and_start_date(ray_session, raw, tmp_path):
    info = convert_raw(raw, tmp_path / "weekly", "weekly", buckets=1, progress=lambda _: None)
    assert (info["periods"], info["end_date"], info["last_date_in_file"], info["rows_after_end"]) == (
        2, "2013-01-14", "2013-01-15", 1)  # the partial third week (one day) is left out
    t = read_series(tmp_path / "weekly")
    np.testing.assert_array_equal(matrix(t, "demand"), [[5, 3], [9, 0], [3, 0], [0, 2], [0, 2.5]])
    np.testing.assert_allclose(matrix(t, "feature_promo"), np.array([[0, 2], [0, 0], [0, 0], [0, 1], [0, 1]]) / 7)
    np.testing.assert_array_equal(matrix(t, "feature_holiday"), [[2, 3], [2, 3], [2, 2], [2, 2], [1, 1]])
    assert t.column("first_period").to_pylist() == [0, 0, 0, 1, 1]

    later = convert_raw(raw, tmp_path / "later", "daily", buckets=2, start_date="2013-01-02",
                        progress=lambda _: None)
    assert (later["start_date"], later["periods"], later["rows_before_start"], later["negative_rows"]) == (
        "2013-01-02", 14, 2, 1)
    t = read_series(tmp_path / "later")
    assert t.column("series_id").to_pylist() == ["s1-i100", "s1-i200", "s2-i200", "s3-i300"]  # s2-i100: day 0 only
    assert matrix(t, "demand")[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]


def test_convert_raw_errors(ray_session, raw, tmp_path):
    bad = write_raw(tmp_path / "bad", TRAIN + "12,2013-01-15,1,100,abc,\n13,2013-01-15,1,200,1e,\n")
    with pytest.raises(DataError, match=r"train.csv: column unit_sales has 2 value\(s\) that are not numbers "
                                        r"\(first: id 12: 'abc'\)"):
        convert_raw(bad, tmp_path / "out", progress=lambda _: None)
    bad_date = write_raw(tmp_path / "bad_date", TRAIN + "12,2013-13-01,1,100,1.0,\n")
    with pytest.raises(DataError, match=r"train.csv: .*date32.*invalid value '2013-13-01'"):
        convert_raw(bad_date, tmp_path / "out", progress=lambda _: None)
    (raw / "train.csv").write_text(TRAIN.replace("unit_sales", "sales"))
    with pytest.raises(DataError, match=r"train.csv: no column unit_sales \(header: id,date,store_nbr"):
        convert_raw(raw, tmp_path / "out")
    (raw / "items.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"raw/items.csv is missing"):
        convert_raw(raw, tmp_path / "out")


def long_table(rows):
    series, weeks, units = zip(*rows)
    return pa.table({"series_id": list(series), "store": [int(s[1]) for s in series],
                     "item": [int(s.split("-i")[1]) for s in series],
                     "week": pa.array(np.array(weeks, dtype="datetime64[D]")).cast(pa.date32()),
                     "units": pa.array(units, pa.float32())})


def test_long_sales_to_series():
    table = long_table([
        ("s1-i7", "2013-01-08", 4.0), ("s1-i7", "2013-01-01", 3.0), ("s0-i2", "2013-01-15", -2.0),
        ("s1-i7", "2013-01-08", 6.0),  # duplicate week: the last row kept
        ("s0-i2", "2013-01-22", None),  # no units: dropped (and its week with it: the last week is 01-15)
        ("s0-i2", "2013-01-08", 1.5),
    ])
    series, counts = long_sales_to_series(table)
    assert counts == {"start_date": "2013-01-01", "periods": 3, "series": 2, "rows_read": 6, "missing_rows": 1,
                      "duplicate_rows": 1, "negative_rows": 1, "negative_units": 2.0, "filled_gaps": 2}
    assert series.column("series_id").to_pylist() == ["s0-i2", "s1-i7"]
    assert series.column("store").to_pylist() == [0, 1] and series.column("item").to_pylist() == [2, 7]
    assert series.column("first_period").to_pylist() == [1, 0]
    np.testing.assert_array_equal(matrix(series, "demand"), [[0, 1.5, 0], [3, 6, 0]])  # gaps: s0 w0, s1 w2
    assert series.column("start_date").to_pylist()[0].isoformat() == "2013-01-01"
    with pytest.raises(DataError, match="week 2013-01-03 is not a whole number of weeks after the first week"):
        long_sales_to_series(long_table([("s1-i7", "2013-01-01", 1.0), ("s1-i7", "2013-01-03", 1.0)]))


def test_convert_weekly_sales_folder(tmp_path):
    folder = tmp_path / "sales"
    folder.mkdir()
    pq.write_table(long_table([("s1-i7", "2013-01-01", 3.0), ("s1-i7", "2013-01-08", 4.0)]), folder / "a.parquet")
    pq.write_table(long_table([("s2-i7", "2013-01-08", 5.0)]), folder / "b.parquet")
    info = convert_weekly_sales(folder, tmp_path / "out")
    assert (info["series"], info["periods"], info["filled_gaps"]) == (2, 2, 1)
    np.testing.assert_array_equal(matrix(read_series(tmp_path / "out"), "demand"), [[3, 4], [0, 5]])
    pq.write_table(pa.table({"series_id": ["x"], "units": [1.0]}), folder / "c.parquet")
    with pytest.raises(DataError, match=r"c.parquet: no column store, item, week"):
        convert_weekly_sales(folder, tmp_path / "out")


@pytest.mark.skipif(not SHARED_SALES.exists(), reason="shared/data/favorita_weekly is not there")
def test_convert_weekly_sales_shared_file(tmp_path):
    info = convert_weekly_sales(SHARED_SALES, tmp_path)
    assert {k: info[k] for k in ("start_date", "periods", "series", "rows_read", "duplicate_rows", "negative_rows",
                                 "negative_units", "filled_gaps")} == {
        "start_date": "2013-01-01", "periods": 171, "series": 4032, "rows_read": 689_472, "duplicate_rows": 0,
        "negative_rows": 6, "negative_units": 153.0, "filled_gaps": 0}
    t = read_series(tmp_path)
    assert t.column("series_id").to_pylist()[:2] == ["s00-i000", "s00-i001"]
    assert matrix(t, "demand").shape == (4032, 171)
    assert matrix(t, "demand").astype(np.float64).sum() == 44_284_550.0 + 153.0  # the returns left out


def test_cli_errors(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"^raw Favorita folder {missing} does not exist$"):
        prepare_data.main(["source=favorita", f"input={missing}"])
    with pytest.raises(ConfigError, match="^prepare.source must be one of favorita, favorita_weekly, "
                                          "synthetic_retail, got 'kaggle'$"):
        prepare_data.main(["source=kaggle"])
    with pytest.raises(ConfigError, match="^source=favorita needs input=<path>"):
        prepare_data.main(["source=favorita"])
    raw = write_raw(tmp_path / "raw", TRAIN.replace("item_nbr", "item"))
    with pytest.raises(DataError, match=f"^{raw}/train.csv: no column item_nbr \\(header: "
                                        "id,date,store_nbr,item,unit_sales,onpromotion\\)$"):
        prepare_data.main(["source=favorita", f"input={raw}"])
    run = subprocess.run([sys.executable, "-m", "jobs.prepare_data", "source=favorita", f"input={raw}"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert (run.returncode, run.stderr) == (2, f"error: {raw}/train.csv: no column item_nbr (header: "
                                               "id,date,store_nbr,item,unit_sales,onpromotion)\n")
    run = subprocess.run([sys.executable, "-m", "jobs.prepare_data", "source=favorita", f"input={missing}"],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert (run.returncode, run.stderr) == (2, f"error: raw Favorita folder {missing} does not exist\n")


def test_cli_weekly_and_synthetic(tmp_path, capsys, monkeypatch):
    long = tmp_path / "sales.parquet"
    pq.write_table(long_table([("s1-i7", "2013-01-01", 3.0), ("s1-i7", "2013-01-15", -1.0)]), long)
    assert prepare_data.main(["source=favorita_weekly", f"input={long}", f"output={tmp_path / 'w'}"]) == 0
    assert read_manifest(tmp_path / "w")["negative_rows"] == 1
    assert f"Output:    {tmp_path / 'w'}" in capsys.readouterr().out
    pytest.importorskip("pipeline.data.retail")
    monkeypatch.setattr(prepare_data, "RETAIL_CHUNK", 50)
    assert prepare_data.main(["source=synthetic_retail", f"output_dir={tmp_path}", "retail.num_series=120",
                              "retail.periods=20", "frequency=daily"]) == 0
    out = tmp_path / "data" / "synthetic_retail-daily"
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet",
                                                               "part-00002.parquet"]
    t = read_series(out)
    assert t.column("product_id").to_pylist() == list(range(120))
    assert matrix(t, "demand").shape == (120, 20) and set(t.column("frequency").to_pylist()) == {"daily"}
    assert read_manifest(out)["series"] == 120
