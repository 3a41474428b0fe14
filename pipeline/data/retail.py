"""Synthetic retail demand in the series layout (``pipeline.data.series``), weekly or daily.

The demand model, the ``retail`` config keys and the seeding: docs/retail.md.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.data.calendar import FREQUENCIES, calendar_features, period_dates
from pipeline.data.series import series_table
from pipeline.errors import check, check_at_least, check_range

BLOCK = 4096              # series per random-number block
STORES = 50               # store = index % STORES, item = index // STORES
PERISHABLE_SHARE = 0.3
SHOCK_RECOVERY = 0.5      # the shock's extra demand is multiplied by this each period after the spike
PROMO_RUN_DAYS = (3, 7)   # daily promotions last this many days (inclusive, uniform)
DAY_OF_WEEK_SHAPE = np.array([-0.5, -0.6, -0.5, -0.4, 0.1, 0.9, 1.0])  # Monday..Sunday, mean 0
CHRISTMAS_RAMP_DAYS = 7   # daily: the lift ramps up over the 7 days before 25 December
_PARAMETERS = ("level", "dispersion", "slow", "zero_prob", "trend", "yearly_amplitude", "yearly_phase",
               "weekly_amplitude", "christmas_lift", "promo_lift", "shock_lift", "perishable")


def validate_retail(cfg) -> None:
    """Raise ConfigError (a ValueError) naming the ``retail.*`` key for a nonsense value."""
    check_at_least("retail", cfg, ("num_series", "periods"))
    check(cfg.frequency in FREQUENCIES, "retail.frequency", f"must be {' or '.join(FREQUENCIES)}, got {cfg.frequency!r}")
    try:
        np.datetime64(str(cfg.start_date), "D")
    except ValueError:
        check(False, "retail.start_date", f"must be an ISO date (YYYY-MM-DD), got {cfg.start_date!r}")
    check_range(cfg.mean_range, "retail.mean_range", 0.0, np.inf, positive=True)
    check_range(cfg.dispersion_range, "retail.dispersion_range", 0.0, np.inf, positive=True)
    check_range(cfg.slow_mover_zero_range, "retail.slow_mover_zero_range", 0.0, 1.0)
    check_range(cfg.trend_range, "retail.trend_range", -1.0, np.inf)
    check(cfg.trend_range[0] > -1, "retail.trend_range", f"must be > -1 (a level that vanishes), got {list(cfg.trend_range)}")
    check_range(cfg.yearly_amplitude_range, "retail.yearly_amplitude_range", 0.0, 1.0)
    check_range(cfg.weekly_amplitude_range, "retail.weekly_amplitude_range", 0.0, 1.0)
    for key in ("christmas_lift_range", "promo_lift_range", "shock_lift_range"):
        check_range(getattr(cfg, key), f"retail.{key}", -1.0, np.inf)
    for key in ("slow_mover_share", "promo_prob", "shock_share"):
        check(0 <= getattr(cfg, key) <= 1, f"retail.{key}", f"must be in [0, 1], got {getattr(cfg, key)}")
    check_at_least("retail", cfg, ("shock_period", "shock_length"), low=0)


def _rows(cfg, seed: int, first: int, count: int | None) -> range:
    validate_retail(cfg)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    count = int(cfg.num_series) - first if count is None else count
    if first < 0 or count < 0 or first + count > int(cfg.num_series):
        raise ValueError(f"series {first}..{first + count - 1} are outside 0..{int(cfg.num_series) - 1} "
                         "(retail.num_series)")
    return range(first, first + count)


def _between(u: np.ndarray, bounds, log: bool = False) -> np.ndarray:
    a, b = float(bounds[0]), float(bounds[1])
    if log:
        return np.exp(np.log(a) + u * (np.log(b) - np.log(a)))
    return a + u * (b - a)


def _shocked_stores(cfg, seed: int) -> np.ndarray:
    """The stores the shock hits: round(shock_share * 50) of them, picked once per seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    hit = np.zeros(STORES, dtype=bool)
    hit[rng.permutation(STORES)[:round(float(cfg.shock_share) * STORES)]] = True
    return hit


def _block_parameters(cfg, seed: int, block: int) -> tuple[dict[str, np.ndarray], np.random.SeedSequence]:
    """Per-series parameters of one block, and the seed sequence for its noise."""
    params_seq, noise_seq = np.random.SeedSequence([seed, 0, block]).spawn(2)
    u = dict(zip(_PARAMETERS, np.random.default_rng(params_seq).random((len(_PARAMETERS), BLOCK))))
    index = block * BLOCK + np.arange(BLOCK)
    return {
        "level": _between(u["level"], cfg.mean_range, log=True),
        "dispersion": _between(u["dispersion"], cfg.dispersion_range, log=True),
        "slow": u["slow"] < float(cfg.slow_mover_share),
        "zero_prob": _between(u["zero_prob"], cfg.slow_mover_zero_range),
        "trend": _between(u["trend"], cfg.trend_range),
        "yearly_amplitude": _between(u["yearly_amplitude"], cfg.yearly_amplitude_range),
        "yearly_phase": u["yearly_phase"],
        "weekly_amplitude": _between(u["weekly_amplitude"], cfg.weekly_amplitude_range),
        "christmas_lift": _between(u["christmas_lift"], cfg.christmas_lift_range),
        "promo_lift": _between(u["promo_lift"], cfg.promo_lift_range),
        "shock_lift": _between(u["shock_lift"], cfg.shock_lift_range),
        "shocked": _shocked_stores(cfg, seed)[index % STORES],
        "perishable": u["perishable"] < PERISHABLE_SHARE,
        "store": (index % STORES).astype(np.int32),
        "item": (index // STORES).astype(np.int32),
    }, noise_seq


def retail_parameters(cfg, seed: int, first: int = 0, count: int | None = None) -> dict[str, np.ndarray]:
    """The per-series ground truth (level, dispersion, slow, zero_prob, trend, lifts,
    shocked, ...) of series first .. first+count-1, as ``synthetic_retail`` draws them."""
    rows = _rows(cfg, seed, first, count)
    parts = [(_block_parameters(cfg, seed, b)[0], lo, hi) for b, lo, hi in _blocks(rows)]
    return {k: np.concatenate([p[k][lo:hi] for p, lo, hi in parts]) for k in parts[0][0]} if parts else {}


def _blocks(rows: range):
    """(block, start, stop) slices within each block that covers ``rows``."""
    if len(rows) == 0:
        return
    for block in range(rows.start // BLOCK, (rows.stop - 1) // BLOCK + 1):
        lo = max(rows.start - block * BLOCK, 0)
        hi = min(rows.stop - block * BLOCK, BLOCK)
        yield block, lo, hi


def _calendar(cfg) -> dict[str, np.ndarray]:
    """Time-only arrays [N]: years since the start, position in the year, weekday shape,
    Christmas weight, shock profile."""
    n, days = int(cfg.periods), FREQUENCIES[cfg.frequency]
    first = period_dates(cfg.start_date, n, cfg.frequency)
    middle = (first - first[0]).astype(np.float64) + (days - 1) / 2
    year_start = first.astype("datetime64[Y]").astype("datetime64[D]")
    day_of_year = (first - year_start).astype(np.float64) + (days - 1) / 2
    if cfg.frequency == "weekly":
        christmas = calendar_features(cfg.start_date, n, "weekly")["christmas"].astype(np.float64)
        weekday = np.zeros(n)
    else:
        december = first.astype("datetime64[Y]").astype("datetime64[M]") + 11
        to_xmas = (december.astype("datetime64[D]") + 24 - first).astype(np.int64)  # days to 25 December
        ramp = (to_xmas >= 1) & (to_xmas <= CHRISTMAS_RAMP_DAYS)
        christmas = np.where(ramp, (CHRISTMAS_RAMP_DAYS + 1 - to_xmas) / CHRISTMAS_RAMP_DAYS, 0.0)
        weekday = DAY_OF_WEEK_SHAPE[(first - np.datetime64("1970-01-05")).astype(np.int64) % 7]
    t = np.arange(n)
    start, length = int(cfg.shock_period), int(cfg.shock_length)
    shock = np.zeros(n)
    if length > 0:
        shock[(t >= start) & (t < start + length)] = 1.0
        after = t >= start + length
        shock[after] = SHOCK_RECOVERY ** (t[after] - (start + length) + 1)
    return {"years": middle / 365.25, "year_position": day_of_year / 365.25, "weekday": weekday,
            "christmas": christmas, "shock": shock}


def _promo_start_prob(share: float) -> float:
    """Daily: the chance a promotion starts on a day so that ``share`` of days are covered
    (runs of PROMO_RUN_DAYS, uniform lengths; solved by bisection)."""
    lengths = np.arange(PROMO_RUN_DAYS[0], PROMO_RUN_DAYS[1] + 1)
    longer = np.array([(lengths > j).mean() for j in range(PROMO_RUN_DAYS[1])])
    lo, hi = 0.0, 1.0
    for _ in range(60):
        q = (lo + hi) / 2
        lo, hi = (q, hi) if 1 - np.prod(1 - q * longer) < share else (lo, q)
    return hi if share > 0 else 0.0


def _promotions(cfg, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    prob = float(cfg.promo_prob)
    if cfg.frequency == "weekly":
        return rng.random(shape) < prob
    s, n = shape
    pad = PROMO_RUN_DAYS[1] - 1  # runs may start before period 0 and reach into it
    starts = rng.random((s, n + pad)) < _promo_start_prob(prob)
    lengths = rng.integers(PROMO_RUN_DAYS[0], PROMO_RUN_DAYS[1] + 1, size=(s, n + pad))
    on = np.zeros(shape, dtype=bool)
    for j in range(PROMO_RUN_DAYS[1]):  # day t is covered by a run that started j days before and lasts > j
        on |= starts[:, pad - j:pad - j + n] & (lengths[:, pad - j:pad - j + n] > j)
    return on


def _block(cfg, seed: int, block: int, cal: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Demand [BLOCK, N] and promo [BLOCK, N] of one block, plus its parameters."""
    p, noise_seq = _block_parameters(cfg, seed, block)
    promo_rng, gamma_rng, count_rng, zero_rng = (np.random.default_rng(s) for s in noise_seq.spawn(4))
    n = int(cfg.periods)
    promo = _promotions(cfg, promo_rng, (BLOCK, n))
    col = lambda name: p[name][:, None]  # noqa: E731
    shape = (np.exp(np.log1p(col("trend")) * cal["years"])
             * (1 + col("yearly_amplitude") * np.cos(2 * np.pi * (cal["year_position"] - col("yearly_phase"))))
             * (1 + col("weekly_amplitude") * cal["weekday"])
             * (1 + col("christmas_lift") * cal["christmas"])
             * (1 + col("promo_lift") * promo)
             * (1 + (col("shock_lift") * col("shocked")) * cal["shock"]))
    np.maximum(shape, 0.0, out=shape)
    regular = ~p["slow"]
    lam = shape  # becomes the Poisson rate, row by row
    k = p["dispersion"][regular][:, None]
    lam[regular] *= p["level"][regular][:, None] * gamma_rng.standard_gamma(
        np.broadcast_to(k, (int(regular.sum()), n))) / k
    demand = count_rng.poisson(lam)
    slow = p["slow"]
    if slow.any():
        sells = zero_rng.random((int(slow.sum()), n)) >= p["zero_prob"][slow][:, None]
        demand[slow] = np.where(sells, demand[slow] + 1, 0)
    return {"demand": demand.astype(np.float32), "promo": promo.astype(np.float32), **p}


def synthetic_retail(cfg, seed: int, first: int = 0, count: int | None = None) -> pa.Table:
    """Series first .. first+count-1 (count None: up to ``cfg.num_series``) of the synthetic
    retail population, in the series layout, with ``promo`` and ``holiday`` (zeros)
    features. The same (cfg, seed) gives every series the same values however the range
    is split."""
    rows = _rows(cfg, seed, first, count)
    cal = _calendar(cfg)
    parts = []
    for block, lo, hi in _blocks(rows):
        out = _block(cfg, seed, block, cal)
        parts.append({k: out[k][lo:hi] for k in ("demand", "promo", "store", "item", "perishable")})
    n = int(cfg.periods)
    join = lambda key, empty: np.concatenate([p[key] for p in parts]) if parts else empty  # noqa: E731
    demand = join("demand", np.zeros((0, n), np.float32))
    index = np.arange(rows.start, rows.stop)
    return series_table(
        demand, str(cfg.start_date), cfg.frequency, product_id=index,
        series_id=np.array([f"r{i}" for i in index], dtype=object),
        store=join("store", np.zeros(0, np.int32)), item=join("item", np.zeros(0, np.int32)),
        perishable=join("perishable", np.zeros(0, bool)),
        features={"promo": join("promo", np.zeros((0, n), np.float32)), "holiday": np.zeros_like(demand)})
