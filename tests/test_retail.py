"""Synthetic retail demand: determinism, the series layout, and each effect measured."""
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.calendar import period_dates
from pipeline.config import load_config
from pipeline.data.retail import BLOCK, DAY_OF_WEEK_SHAPE, retail_parameters, synthetic_retail
from pipeline.data.series import STATIC, matrix


@pytest.fixture(scope="module")
def retail():
    return load_config([]).retail


def plain(cfg, **changes):
    """Level 10, nearly Poisson, every effect off; then ``changes``."""
    off = dict(num_series=BLOCK, periods=104, frequency="weekly", start_date="2013-01-01",
               mean_range=[10.0, 10.0], dispersion_range=[1e4, 1e4], slow_mover_share=0.0,
               trend_range=[0.0, 0.0], yearly_amplitude_range=[0.0, 0.0], weekly_amplitude_range=[0.0, 0.0],
               christmas_lift_range=[0.0, 0.0], promo_prob=0.0, shock_share=0.0)
    return replace(cfg, **{**off, **changes})


def test_deterministic_and_independent_of_chunking(retail):
    cfg = replace(retail, num_series=BLOCK + 10, periods=30)
    whole = synthetic_retail(cfg, seed=3, first=0, count=10)
    assert synthetic_retail(cfg, seed=3, first=0, count=10).equals(whole)
    assert synthetic_retail(cfg, seed=3, first=5, count=5).equals(whole.slice(5, 5))
    assert not np.array_equal(matrix(synthetic_retail(cfg, seed=4, first=0, count=10), "demand"),
                              matrix(whole, "demand"))
    across = synthetic_retail(cfg, seed=3, first=BLOCK - 3, count=6)  # spans two blocks
    assert synthetic_retail(cfg, seed=3, first=BLOCK - 1, count=2).equals(across.slice(2, 2))
    assert across.column("product_id").to_pylist() == list(range(BLOCK - 3, BLOCK + 3))
    assert synthetic_retail(cfg, seed=3, first=BLOCK + 10, count=0).num_rows == 0
    assert synthetic_retail(replace(cfg, num_series=12), seed=3).num_rows == 12


def test_series_layout(retail):
    table = synthetic_retail(replace(retail, num_series=2000), seed=0)
    assert table.num_rows == 2000
    for name, dtype in STATIC.items():
        assert table.schema.field(name).type == dtype, name
    features = ["christmas", "holiday", "promo", "to_christmas", "year_cos", "year_sin"]
    assert table.column_names == [*STATIC, "demand", *(f"feature_{f}" for f in features)]
    for name in ["demand", *(f"feature_{f}" for f in features)]:
        assert table.schema.field(name).type == pa.list_(pa.float32()), name
    demand = matrix(table, "demand")
    assert demand.shape == (2000, 171)
    assert demand.min() == 0 and np.array_equal(demand, np.round(demand))
    assert table.column("series_id").to_pylist()[:3] == ["r0", "r1", "r2"]
    assert table.column("store").to_pylist()[49:52] == [49, 0, 1]
    assert table.column("item").to_pylist()[49:52] == [0, 1, 1]
    assert table.column("frequency").to_pylist()[0] == "weekly"
    assert str(table.column("start_date")[0]) == "2013-01-01"
    assert abs(np.mean(table.column("perishable").to_numpy()) - 0.3) < 0.035
    assert not matrix(table, "feature_holiday").any()
    promo = matrix(table, "feature_promo")
    assert set(np.unique(promo)) == {0.0, 1.0} and abs(promo.mean() - 0.05) < 0.003
    daily = synthetic_retail(replace(retail, num_series=5, periods=30, frequency="daily"), seed=0)
    assert {"feature_week_sin", "feature_week_cos"} <= set(daily.column_names)
    assert matrix(daily, "demand").shape == (5, 30)


def test_grand_mean_and_dispersion(retail):
    demand = matrix(synthetic_retail(plain(retail, dispersion_range=[5.0, 5.0]), seed=1), "demand")
    assert demand.mean() == pytest.approx(10.0, rel=0.02)
    assert demand.var() == pytest.approx(10 + 10**2 / 5, rel=0.05)  # negative binomial, k = 5
    level = retail_parameters(replace(retail, mean_range=[1.0, 100.0]), seed=1)["level"]
    assert level.min() >= 1 and level.max() <= 100
    assert np.median(level) == pytest.approx(10.0, rel=0.1)  # log-uniform: median sqrt(1 * 100)


def test_christmas_weekly_lifts_the_week_of_25_december(retail):
    table = synthetic_retail(plain(retail, christmas_lift_range=[0.5, 0.5]), seed=2)
    weeks = matrix(table, "demand").mean(axis=0)
    xmas = np.flatnonzero(matrix(table, "feature_christmas")[0])
    assert list(xmas) == [51, 103]  # 2013-12-24 and 2014-12-23 start the weeks holding 25 December
    neighbours = np.concatenate([weeks[44:51], weeks[52:59]])
    assert weeks[51] / neighbours.mean() == pytest.approx(1.5, abs=0.04)
    assert neighbours.mean() == pytest.approx(10.0, rel=0.02)


def test_christmas_daily_ramps_up_to_24_december(retail):
    cfg = plain(retail, frequency="daily", periods=370, christmas_lift_range=[0.7, 0.7])
    days = matrix(synthetic_retail(cfg, seed=2), "demand").mean(axis=0)
    dates = period_dates("2013-01-01", 370, "daily")
    day = lambda text: int(np.flatnonzero(dates == np.datetime64(text))[0])  # noqa: E731
    ordinary = days[day("2013-12-01"):day("2013-12-15")].mean()
    assert ordinary == pytest.approx(10.0, rel=0.02)
    assert days[day("2013-12-24")] / ordinary == pytest.approx(1.7, abs=0.05)
    assert days[day("2013-12-21")] / ordinary == pytest.approx(1 + 0.7 * 4 / 7, abs=0.05)
    assert days[day("2013-12-17")] / ordinary == pytest.approx(1.0, abs=0.05)
    assert days[day("2013-12-25")] / ordinary == pytest.approx(1.0, abs=0.05)


def test_promotions_weekly(retail):
    table = synthetic_retail(plain(retail, promo_prob=0.2, promo_lift_range=[0.8, 0.8]), seed=3)
    demand, promo = matrix(table, "demand"), matrix(table, "feature_promo") > 0
    assert promo.mean() == pytest.approx(0.2, abs=0.005)
    assert demand[promo].mean() / demand[~promo].mean() == pytest.approx(1.8, abs=0.03)
    assert demand[~promo].mean() == pytest.approx(10.0, rel=0.02)


def test_promotions_daily_run_for_days(retail):
    cfg = plain(retail, frequency="daily", periods=120, promo_prob=0.2, promo_lift_range=[1.0, 1.0])
    table = synthetic_retail(cfg, seed=3)
    demand, promo = matrix(table, "demand"), matrix(table, "feature_promo") > 0
    assert promo.mean() == pytest.approx(0.2, abs=0.01)
    assert demand[promo].mean() / demand[~promo].mean() == pytest.approx(2.0, abs=0.04)
    inner = promo[:, 1:-1].astype(int)  # runs inside the window: they start and end there
    changes = np.diff(np.pad(inner, ((0, 0), (1, 1))), axis=1)
    starts, ends = np.nonzero(changes == 1), np.nonzero(changes == -1)
    lengths = ends[1] - starts[1]
    inside = (inner[:, 0] == 0)[starts[0]] & (inner[:, -1] == 0)[starts[0]]
    assert lengths[inside].min() >= 3 and np.median(lengths[inside]) >= 4  # 3-7 days, overlaps merge


def test_shock_hits_a_region_then_recovers(retail):
    cfg = plain(retail, shock_share=0.3, shock_period=50, shock_length=3, shock_lift_range=[2.0, 2.0])
    demand = matrix(synthetic_retail(cfg, seed=4), "demand")
    params = retail_parameters(cfg, seed=4)
    hit = params["shocked"]
    stores = np.unique(params["store"][hit])
    assert len(stores) == 15 and not np.isin(params["store"][~hit], stores).any()
    before = demand[hit, 40:50].mean()
    assert before == pytest.approx(10.0, rel=0.02)
    assert demand[hit, 50:53].mean() / before == pytest.approx(3.0, abs=0.06)
    assert demand[hit, 53].mean() / before == pytest.approx(2.0, abs=0.08)   # recovery: extra halves
    assert demand[hit, 54].mean() / before == pytest.approx(1.5, abs=0.08)
    assert demand[hit, 70:].mean() / before == pytest.approx(1.0, abs=0.02)
    assert demand[~hit, 50:53].mean() == pytest.approx(10.0, rel=0.02)


def test_no_shock_when_it_starts_after_the_history(retail):
    def demand(**changes):
        cfg = plain(retail, num_series=300, **{"shock_share": 0.5, "shock_lift_range": [2.0, 2.0], **changes})
        return matrix(synthetic_retail(cfg, seed=5), "demand")

    none = demand(shock_period=104, shock_length=3)
    assert np.array_equal(none, demand(shock_period=10, shock_length=0))
    assert np.array_equal(none, demand(shock_period=10, shock_length=3, shock_share=0.0))
    assert not np.array_equal(none, demand(shock_period=10, shock_length=3))


def test_slow_movers_are_intermittent(retail):
    cfg = plain(retail, slow_mover_share=0.5, slow_mover_zero_range=[0.6, 0.8])
    demand = matrix(synthetic_retail(cfg, seed=6), "demand")
    slow = retail_parameters(cfg, seed=6)["slow"]
    assert slow.mean() == pytest.approx(0.5, abs=0.03)
    zeros = (demand[slow] == 0).mean(axis=1)
    assert zeros.min() > 0.6 - 0.15 and zeros.max() < 0.8 + 0.15  # 104 periods each: binomial noise
    assert zeros.mean() == pytest.approx(0.7, abs=0.01)
    assert demand[slow][demand[slow] > 0].mean() == pytest.approx(2.0, abs=0.03)  # 1 + Poisson(1)
    assert (demand[~slow] == 0).mean() < 0.001
    assert demand[~slow].mean() == pytest.approx(10.0, rel=0.02)


def test_yearly_seasonality_has_the_configured_amplitude(retail):
    def amplitude(a):
        cfg = plain(retail, mean_range=[100.0, 100.0], yearly_amplitude_range=[a, a])
        table = synthetic_retail(cfg, seed=7)
        demand = matrix(table, "demand")
        x = np.stack([np.ones(104), matrix(table, "feature_year_sin")[0], matrix(table, "feature_year_cos")[0]], 1)
        coef = np.linalg.lstsq(x, demand.T, rcond=None)[0]
        return np.hypot(coef[1], coef[2]) / coef[0]

    assert amplitude(0.5).mean() == pytest.approx(0.5, abs=0.01)
    assert amplitude(0.0).mean() < 0.03


def test_trend_compounds_per_year(retail):
    demand = matrix(synthetic_retail(plain(retail, trend_range=[0.2, 0.2]), seed=8), "demand")
    assert demand[:, 52:].mean() / demand[:, :52].mean() == pytest.approx(1.2, abs=0.01)


def test_daily_day_of_week_pattern(retail):
    cfg = plain(retail, frequency="daily", periods=70, start_date="2024-01-01",  # a Monday
                weekly_amplitude_range=[0.4, 0.4])
    by_weekday = matrix(synthetic_retail(cfg, seed=9), "demand").reshape(BLOCK, 10, 7).mean(axis=(0, 1))
    assert by_weekday == pytest.approx(10 * (1 + 0.4 * DAY_OF_WEEK_SHAPE), rel=0.02)
    assert by_weekday.argmax() == 6 and by_weekday.argmin() == 1  # Sunday high, Tuesday low


@pytest.mark.parametrize("changes, key", [
    (dict(shock_period=-1), "retail.shock_period"),
    (dict(shock_length=-2), "retail.shock_length"),
    (dict(mean_range=[0.0, 5.0]), "retail.mean_range"),
    (dict(mean_range=[5.0, 1.0]), "retail.mean_range"),
    (dict(dispersion_range=[1.0]), "retail.dispersion_range"),
    (dict(frequency="monthly"), "retail.frequency"),
    (dict(start_date="not a date"), "retail.start_date"),
    (dict(promo_prob=1.5), "retail.promo_prob"),
    (dict(slow_mover_zero_range=[0.5, 1.2]), "retail.slow_mover_zero_range"),
    (dict(trend_range=[-1.0, 0.0]), "retail.trend_range"),
    (dict(yearly_amplitude_range=[0.0, 1.5]), "retail.yearly_amplitude_range"),
    (dict(promo_lift_range=[-2.0, 0.0]), "retail.promo_lift_range"),
    (dict(num_series=0), "retail.num_series"),
])
def test_nonsense_is_refused_naming_the_key(retail, changes, key):
    with pytest.raises(ValueError, match=key):
        synthetic_retail(replace(retail, **changes), seed=0, count=1)


def test_rows_and_seed_are_checked(retail):
    cfg = replace(retail, num_series=10)
    with pytest.raises(ValueError, match="num_series"):
        synthetic_retail(cfg, seed=0, first=5, count=6)
    with pytest.raises(ValueError, match="seed"):
        synthetic_retail(cfg, seed=-1)
