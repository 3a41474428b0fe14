"""Calendar covariates: known in advance for every period, the same for every series.

Periods are days or weeks counted from a start date (a week is the 7 days from its first
day, as in ``shared/data/favorita_weekly``, whose weeks start on Tuesdays).
"""
from __future__ import annotations

import numpy as np

FREQUENCIES = {"daily": 1, "weekly": 7}


def period_days(frequency: str) -> int:
    if frequency not in FREQUENCIES:
        raise ValueError(f"unknown frequency {frequency!r}; use {' or '.join(FREQUENCIES)}")
    return FREQUENCIES[frequency]


def period_dates(start_date, periods: int, frequency: str) -> np.ndarray:
    """The first day of each period (datetime64[D])."""
    start = np.datetime64(str(start_date), "D")
    return start + np.arange(periods) * period_days(frequency)


def calendar_features(start_date, periods: int, frequency: str) -> dict[str, np.ndarray]:
    """Float32 [periods] each: ``christmas`` (1 in the period that holds 25 December),
    ``to_christmas`` (days from the period's first day to the next 25 December, / 365),
    ``year_sin`` / ``year_cos`` (position in the year), and for daily periods
    ``week_sin`` / ``week_cos`` (day of the week)."""
    n = period_days(frequency)
    first = period_dates(start_date, periods, frequency)
    last = first + (n - 1)
    years = first.astype("datetime64[Y]")
    year_numbers = years.astype(np.int64) + 1970
    xmas = np.array([f"{y}-12-25" for y in year_numbers], dtype="datetime64[D]")
    following = np.array([f"{y + 1}-12-25" for y in year_numbers], dtype="datetime64[D]")
    next_xmas = np.where(xmas >= first, xmas, following)
    day_of_year = (first - years.astype("datetime64[D]")).astype(np.float64)
    angle = 2 * np.pi * day_of_year / 365.25
    out = {
        "christmas": ((xmas >= first) & (xmas <= last)).astype(np.float32),
        "to_christmas": ((next_xmas - first).astype(np.float64) / 365.0).astype(np.float32),
        "year_sin": np.sin(angle).astype(np.float32),
        "year_cos": np.cos(angle).astype(np.float32),
    }
    if frequency == "daily":
        weekday = ((first - np.datetime64("1970-01-05")).astype(np.int64) % 7).astype(np.float64)  # Monday 0
        out["week_sin"] = np.sin(2 * np.pi * weekday / 7).astype(np.float32)
        out["week_cos"] = np.cos(2 * np.pi * weekday / 7).astype(np.float32)
    return out
