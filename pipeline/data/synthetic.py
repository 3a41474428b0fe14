"""Synthetic product populations, and the train / valid / test Parquet folders of a job."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.core.batch import ECONOMICS
from pipeline.core.demand import sample_demand
from pipeline.data.parquet import SPLITS, to_arrow, validate_products, write_shards

# the project's ``[data]`` lines; pipeline.reporting.logs (a layer above) formats them
log = logging.getLogger("sidbp.data")


def synthetic_population(cfg, seed: int) -> dict[str, np.ndarray]:
    """Draw ``cfg.num_products`` products (distribution, parameters, economics, lead time)
    and their demand histories. ``cfg`` is a ``DataConfig``; deterministic by seed."""
    rng = np.random.default_rng(seed)
    n = cfg.num_products
    dist = rng.choice(np.asarray(cfg.distributions), size=n)
    lo, hi = cfg.mean_range
    mean = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n)) if hi > lo else np.full(n, lo)
    shape = np.zeros(n)
    for name, bounds in (("negbin", cfg.negbin_shape_range), ("zip", cfg.zero_prob_range), ("gamma", cfg.gamma_cv_range)):
        chosen = dist == name
        shape[chosen] = rng.uniform(*bounds, size=chosen.sum())
    cols = {
        "product_id": np.arange(n, dtype=np.int64),
        "true_dist": dist.astype(str),
        "true_mean": mean,
        "true_shape": shape,
        "lead_time": rng.integers(cfg.lead_time_range[0], cfg.lead_time_range[1] + 1, size=n),
    }
    for name in ECONOMICS:
        a, b = getattr(cfg, f"{name}_range")
        cols[name] = rng.uniform(a, b, size=n) if b > a else np.full(n, float(a))
    cols["demand"] = sample_demand(rng, dist, mean, shape, cfg.periods)
    return cols


def split_products(n: int, valid_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Held-out products: a seeded permutation cut into train / valid / test."""
    order = np.random.default_rng(seed + 7919).permutation(n)
    n_test, n_valid = int(round(n * test_fraction)), int(round(n * valid_fraction))
    return {"test": np.sort(order[:n_test]), "valid": np.sort(order[n_test:n_test + n_valid]),
            "train": np.sort(order[n_test + n_valid:])}


def materialize(cfg, seed: int, out_dir: Path, min_periods: dict[str, int] | None = None,
                problem=None) -> dict[str, Path]:
    """The train / valid / test Parquet folders for a job.

    With ``data.path`` set they are its ``train``, ``valid`` and ``test`` subfolders, each
    checked by ``validate_products`` (histories of ``min_periods[split]`` or more; the
    parameter columns against ``problem``'s constants).
    Otherwise the synthetic population of ``cfg`` (a ``DataConfig``) is written once under
    ``out_dir/data/<hash of the data config and seed>`` and reused by later jobs.
    """
    if cfg.path:
        root = Path(cfg.path).expanduser().resolve()
        splits = {s: root / s for s in SPLITS}
        missing = [str(p) for p in splits.values() if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"data.path {root} must hold train/, valid/ and test/ Parquet "
                                    f"folders; missing: {', '.join(missing)}")
        for name, folder in splits.items():
            c = validate_products(folder, (min_periods or {}).get(name, 1), problem)
            empty = f", {c['empty_files']} empty files skipped" if c["empty_files"] else ""
            log.info(f"{name}: {c['products']:,} products x {c['periods']} periods in {c['files']} files{empty}")
        return splits
    spec = {k: v for k, v in asdict(cfg).items() if k not in ("path", "shard_rows")}
    key = hashlib.sha256(json.dumps({"seed": seed, **spec}, sort_keys=True, default=list).encode()).hexdigest()[:12]
    root = out_dir / "data" / f"synthetic-{key}"
    splits = {s: root / s for s in SPLITS}
    if (root / "_SUCCESS").exists():
        return splits
    # written aside and renamed into place, so concurrent jobs never read half a dataset
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cols = synthetic_population(cfg, seed)
    index = split_products(cfg.num_products, cfg.valid_fraction, cfg.test_fraction, seed)
    for name in SPLITS:
        write_shards(to_arrow(cols, index[name]), tmp / name, cfg.shard_rows)
    (tmp / "spec.json").write_text(json.dumps({"seed": seed, **spec}, indent=2, default=list))
    (tmp / "_SUCCESS").touch()
    if root.exists() and not (root / "_SUCCESS").exists():
        shutil.rmtree(root)  # left by an interrupted writer
    try:
        os.rename(tmp, root)
    except OSError:  # another job finished the same dataset first
        shutil.rmtree(tmp, ignore_errors=True)
    return splits
