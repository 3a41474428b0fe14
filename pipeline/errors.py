"""Errors that are not bugs, which jobs print as one line: a configuration mistake, bad
input data and an unreachable tracking server (exit code 2), a numerical fault that stopped
training (1); and the checks that raise ``ConfigError`` naming the key."""


class ConfigError(ValueError):
    """A user's configuration mistake; the message is one line naming the key."""


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def check_at_least(section: str, values, keys, low=1) -> None:
    """``<section>.<key> must be >= <low>, got ...`` for the first of ``keys`` below ``low``."""
    for key in keys:
        check(getattr(values, key) >= low, f"{section}.{key}", f"must be >= {low}, got {getattr(values, key)}")


def check_range(values, key: str, low: float = 0.0, high: float | None = None, positive: bool = False) -> None:
    """A ``[low, high]`` pair: two values, in order, from ``low`` (and > 0 when ``positive``),
    up to ``high`` when given."""
    values = list(values)
    check(len(values) == 2, key, f"must be [low, high], got {values}")
    check(values[0] <= values[1], key, f"must have low <= high, got {values}")
    check(not positive or values[0] > 0, key, f"must be > 0, got {values}")
    if high is None:
        check(values[0] >= low, key, f"must be >= {low}, got {values}")
    else:
        check(low <= values[0] and values[1] <= high, key, f"must lie in [{low}, {high}], got {values}")


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file, the column and
    how many rows."""


class NumericalFault(RuntimeError):
    """Training met a non-finite loss or gradient and stopped before applying it; the
    message says where, and which checkpoint (the last good one) is kept."""


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (or the store written) when a job starts."""


FAULT_FILE = "numerical_fault.txt"  # in the run folder: what a worker that stopped on one wrote
