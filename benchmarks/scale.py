"""One training epoch over 100,000 and 1,000,000 product histories (docs/performance.md, Scale).

    python -m benchmarks.scale [products=100000,1000000] [workers=1] [periods=104] [work=/tmp/sidbp-scale]

For each size: writes that many synthetic products (104 weeks each) as Parquet shards of
50,000, chunk by chunk (never the whole population in memory), then runs ``jobs.train``
for one epoch on them: Ray Data streams the shards into Ray Train, an MLP policy
[32, 32, 32] on batches of 8,192 products x 50 periods, one time window per batch. Each
size runs in its own process, so that its peak memory is its own: the driver's (getrusage)
and every Ray worker's (VmHWM), polled. Writes ``benchmarks/results/scale.csv``
(``benchmark,config,value,unit``) and the "Scale" block of ``docs/performance.md``.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from benchmarks import key_values, run_script
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

DEFAULTS = {"products": "100000,1000000", "workers": 1, "periods": 104, "work": "/tmp/sidbp-scale", "only": 0}
SHARD = 50_000
HELD_OUT = 2_000  # validation and test products each
TRAIN = ["policy.kind=mlp", "policy.hidden=[32,32,32]", "train.batch_size=8192", "train.windows_per_batch=1",
         "train.history=40", "train.horizon=50", "train.warmup=10", "train.epochs=1", "eval.start=52",
         "eval.warmup=10", "eval.baselines=[]", "data.lead_time_range=[0,2]"]


def options(args: list[str]) -> dict:
    return key_values(args, DEFAULTS)


def write_population(folder: Path, products: int, periods: int, seed: int = 0) -> float:
    """train/ (``products``), valid/ and test/ (``HELD_OUT`` each), in shards of
    ``SHARD``, one chunk in memory at a time; returns the seconds it took."""
    import pyarrow.parquet as pq

    from pipeline.data.synthetic import synthetic_population
    from pipeline.data.parquet import to_arrow

    started = time.perf_counter()
    base = load_config([f"data.periods={periods}", *TRAIN]).data
    done = folder / "_SUCCESS"
    if done.exists():
        return 0.0
    for split, count, offset in (("train", products, 0), ("valid", HELD_OUT, products),
                                 ("test", HELD_OUT, products + HELD_OUT)):
        target = folder / split
        target.mkdir(parents=True, exist_ok=True)
        for i, first in enumerate(range(0, count, SHARD)):
            n = min(SHARD, count - first)
            cols = synthetic_population(replace(base, num_products=max(n, 3)), seed + offset + first)
            cols["product_id"] = cols["product_id"] + offset + first
            table = to_arrow(cols).slice(0, n)
            pq.write_table(table, target / f"part-{i:05d}.parquet")
        logs.get("scale").info(f"{split}: {count:,} products written")
    done.touch()
    return time.perf_counter() - started


def one_size(opts: dict) -> dict:
    """Runs in its own process: write the data, train one epoch, measure."""
    from mlflow.tracking import MlflowClient

    from benchmarks.favorita_ingest import PeakMemory
    from pipeline.adapters.training_run import train
    from pipeline.config import load_config

    n, work = opts["only"], Path(opts["work"])
    folder = work / f"products-{n}"
    write_seconds = write_population(folder, n, opts["periods"])
    uri = f"sqlite:///{work / 'mlflow.db'}"
    name = f"scale-{n}-w{opts['workers']}"
    monitor = PeakMemory()
    monitor.start()
    started = time.perf_counter()
    result = train(load_config([f"name={name}", f"output_dir={work / 'runs'}", f"data.path={folder}",
                                f"data.periods={opts['periods']}", f"train.num_workers={opts['workers']}",
                                f"mlflow.tracking_uri={uri}", "mlflow.experiment=scale", *TRAIN]))
    job_seconds = time.perf_counter() - started
    monitor.stop()
    m = MlflowClient(uri).get_run(result.run_id).data.metrics
    worker_peak = max(monitor.hwm.values()) if monitor.hwm else 0
    return {"products": n, "workers": opts["workers"], "epoch_seconds": m["train/epoch_seconds"],
            "compute_seconds": m["train/compute_seconds"], "steps": m["train/steps"], "job_seconds": job_seconds,
            "write_seconds": write_seconds,
            "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mib": worker_peak / 2**20,
            "worker_private_peak_mib": max(monitor.anon.values(), default=0) / 2**20,
            "valid_avg_cost": m.get("valid/avg_cost", float("nan"))}


def main(args: list[str]) -> int:
    opts = options(args)
    if opts["only"]:
        print("RESULT " + json.dumps(one_size(opts)), flush=True)  # for the parent process, not a log line
        return 0
    rows, log = [], logs.get("scale")
    for n in (int(x) for x in opts["products"].split(",")):
        cmd = [sys.executable, "-m", "benchmarks.scale", f"only={n}", f"workers={opts['workers']}",
               f"periods={opts['periods']}", f"work={opts['work']}"]
        log.info(f"{n:,} products: {' '.join(cmd[1:])}")
        out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            logs.get("").info(out.stdout[-3000:] + "\n" + out.stderr[-3000:])
            raise SystemExit(f"scale run for {n} products failed (exit {out.returncode})")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        r = rows[-1]
        log.info(f"{n:,} products: epoch {r['epoch_seconds']:.1f} s, driver {r['driver_peak_mib']:.0f} MiB, "
                 f"largest worker {r['worker_peak_mib']:.0f} MiB")
    frame = pd.DataFrame(rows)
    csv = [(f"scale/{k}", f"products={r.products};workers={r.workers}", getattr(r, k), unit)
           for r in frame.itertuples() for k, unit in (("epoch_seconds", "s"), ("driver_peak_mib", "MiB"),
                                                       ("worker_peak_mib", "MiB"), ("worker_private_peak_mib", "MiB"))]
    results = PROJECT_ROOT / "benchmarks" / "results"
    pd.DataFrame(csv, columns=["benchmark", "config", "value", "unit"]).to_csv(results / "scale.csv", index=False)
    per_product = frame.epoch_seconds / frame.products
    lines = ["## Scale: one epoch over 100,000 and 1,000,000 products", "",
             f"Command: `python -m benchmarks.scale {' '.join(args)}` ({time.strftime('%Y-%m-%d')}). Synthetic "
             f"products, {opts['periods']} weeks each, Parquet shards of {SHARD:,}; `jobs.train` for one epoch with "
             f"{opts['workers']} Ray Train worker(s): Ray Data streams the shards, MLP [32, 32, 32], batches of "
             "8,192 products x 50 periods, one window per batch. Peak memory per process: the driver (getrusage) "
             "and the largest Ray worker (VmHWM, including object-store pages it mapped).", "",
             markdown_table(pd.DataFrame({
                 "products": [f"{r.products:,}" for r in frame.itertuples()],
                 "epoch time": [f"{r.epoch_seconds:.1f} s" for r in frame.itertuples()],
                 "per 100,000 products": [f"{1e5 * r.epoch_seconds / r.products:.1f} s" for r in frame.itertuples()],
                 "driver peak": [f"{r.driver_peak_mib:,.0f} MiB" for r in frame.itertuples()],
                 "largest worker peak (private)": [f"{r.worker_peak_mib:,.0f} MiB ({r.worker_private_peak_mib:,.0f} MiB)"
                                                   for r in frame.itertuples()]}))]
    if len(frame) > 1:
        lines += ["", f"Epoch time per product, largest over smallest size: "
                      f"{per_product.iloc[-1] / per_product.iloc[0]:.2f} (1.00 is exactly linear)."]
    write_block(PROJECT_ROOT / "docs" / "performance.md", "perf:scale", "\n".join(lines), header="# Performance\n")
    logs.get("").info("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_script(main)
