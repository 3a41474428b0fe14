"""One line of progress for long work: how much is done, the rate, the time left."""
from __future__ import annotations

import time


def clock(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``12.3s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def eta(done: float, total: float, started: float, unit: str = "") -> str:
    """``elapsed 1m02s, 2.1 trials/min, about 3m10s left`` after ``done`` of ``total``
    units of work begun at ``started`` (``time.time()``)."""
    elapsed = max(time.time() - started, 1e-9)
    rate = done / elapsed
    left = (total - done) / rate if rate > 0 else float("inf")
    per = f", {rate * 60:,.2f} {unit}/min" if unit and rate < 1 else f", {rate:,.1f} {unit}/s" if unit else ""
    return f"elapsed {clock(elapsed)}{per}, about {clock(left) if left != float('inf') else '?'} left"
