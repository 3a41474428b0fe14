"""One training epoch over 100,000 and 1,000,000 product histories, against the step alone
(docs/performance.md, Scale and the job end to end).

    python -m benchmarks.scale [products=100000,1000000] [kind=cnn] [threads=2] [workers=1]
        [periods=104] [work=/tmp/sidbp-scale]

For each size: writes that many synthetic products (104 weeks each, lost sales with lead
time 4) as Parquet shards of 50,000, chunk by chunk (never the whole population in memory),
then runs ``jobs.train`` for one epoch on them: Ray Data streams the shards into Ray Train,
the ``kind`` policy (cnn: the default network; mlp: hidden [32, 32, 32]) on batches of
8,192 products x 50 periods, one time window per batch, ``threads`` torch threads per
worker (``train.cpus_per_worker``). The epoch's wall time is its training (streaming and
steps), its validation (2,000 products) and its checkpoint; its rate is the epoch's
product-periods over that. Before the job, the same process times ``benchmarks.step_speed``'s
forward+backward call on the same policy, batch, horizon, lead time and threads (median
of 5): the job's rate over that one is the share item of the report. Each size runs in its
own process, so that its peak memory is its own: the driver's (getrusage) and every Ray
worker's (VmHWM), polled. Writes ``benchmarks/results/scale.csv``
(``benchmark,config,value,unit``) and the "Scale" block of ``docs/performance.md``.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from benchmarks import key_values, record_run, run_script
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

DEFAULTS = {"products": "100000,1000000", "kind": "cnn", "threads": 2, "workers": 1, "periods": 104,
            "work": "/tmp/sidbp-scale", "only": 0}
SHARD = 50_000
PP = "product-periods/s"
HELD_OUT = 2_000  # validation and test products each
BATCH, HORIZON, LEAD_TIME = 8192, 50, 4  # step_speed's headline shape
EPOCHS = 2  # the first starts Ray Data's streaming and fills the cache; the second is the steady state
TRAIN = [f"train.batch_size={BATCH}", "train.windows_per_batch=1", "train.history=52", f"train.horizon={HORIZON}",
         "train.warmup=10", f"train.epochs={EPOCHS}", "eval.start=52", "eval.warmup=10", "eval.baselines=[]",
         f"data.lead_time_range=[{LEAD_TIME},{LEAD_TIME}]"]


def train_args(opts: dict) -> list[str]:
    from benchmarks.step_speed import policy_overrides

    return [*TRAIN, *policy_overrides(opts["kind"]), f"train.cpus_per_worker={opts['threads']}"]


def step_rate(opts: dict) -> float:
    """Product-periods per second of ``benchmarks.step_speed``'s forward+backward call on the
    job's policy, batch, horizon and lead time, at ``threads`` threads (median of 5)."""
    import torch

    from benchmarks.step_speed import setup, step_calls, time_calls

    torch.set_num_threads(opts["threads"])
    cfg = load_config(train_args(opts))
    problem, policy, batch, start, width, warmup = setup(BATCH, HORIZON, LEAD_TIME, opts["kind"],
                                                        tuple(cfg.policy.hidden))
    call = step_calls(problem, policy, batch, start, HORIZON, width, warmup)["forward+backward"]
    return BATCH * HORIZON / time_calls({"step": call}, 5, lambda: None)["step"]


def options(args: list[str]) -> dict:
    return key_values(args, DEFAULTS)


def write_population(folder: Path, products: int, periods: int, seed: int = 0) -> float:
    """train/ (``products``), valid/ and test/ (``HELD_OUT`` each), in shards of
    ``SHARD``, one chunk in memory at a time; returns the seconds it took."""
    import pyarrow.parquet as pq

    from pipeline.data.synthetic import synthetic_population
    from pipeline.data.parquet import to_arrow

    started = time.perf_counter()
    base = load_config([f"data.periods={periods}", *TRAIN]).data  # the synthetic population's settings
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
    folder = work / f"products-{n}-L{LEAD_TIME}"
    write_seconds = write_population(folder, n, opts["periods"])
    step = step_rate(opts)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    name = f"scale-{n}-{opts['kind']}-w{opts['workers']}-t{opts['threads']}-{time.strftime('%Y%m%d-%H%M%S')}"  # a new run, never resumed
    monitor = PeakMemory()
    monitor.start()
    started = time.perf_counter()
    result = train(load_config([f"name={name}", f"output_dir={work / 'runs'}", f"data.path={folder}",
                                f"data.periods={opts['periods']}", f"train.num_workers={opts['workers']}",
                                f"mlflow.tracking_uri={uri}", "mlflow.experiment=scale", *train_args(opts)]))
    job_seconds = time.perf_counter() - started
    monitor.stop()
    client = MlflowClient(uri)
    history = {key: [h.value for h in sorted(client.get_metric_history(result.run_id, key), key=lambda h: h.step)]
               for key in ("train/epoch_seconds", "train/compute_seconds", "valid/seconds",
                           "train/checkpoint_seconds", "train/steps")}
    epochs = []
    for e in range(len(history["train/epoch_seconds"])):
        train_s, compute_s, valid_s, ckpt_s, steps = (history[k][e] for k in history)
        wall = train_s + valid_s + ckpt_s
        epochs.append({"epoch": e + 1, "wall": wall, "compute": compute_s, "data_wait": train_s - compute_s,
                       "valid": valid_s, "checkpoint": ckpt_s, "steps": steps,
                       "rate": steps * BATCH * HORIZON * opts["workers"] / wall})
    return {"products": n, "kind": opts["kind"], "threads": opts["threads"], "workers": opts["workers"],
            "epochs": epochs, "step_rate": step, "job_seconds": job_seconds, "write_seconds": write_seconds,
            "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mib": (max(monitor.hwm.values()) if monitor.hwm else 0) / 2**20,
            "worker_private_peak_mib": max(monitor.anon.values(), default=0) / 2**20}


def main(args: list[str]) -> int:
    opts = options(args)
    train_args(opts)  # a bad kind fails here, not in a child process
    if opts["only"]:
        print("RESULT " + json.dumps(one_size(opts)), flush=True)  # for the parent process, not a log line
        return 0
    rows, log, load = [], logs.get("scale"), os.getloadavg()[0]
    for n in (int(x) for x in opts["products"].split(",")):
        cmd = [sys.executable, "-m", "benchmarks.scale", f"only={n}",
               *(f"{k}={opts[k]}" for k in ("kind", "threads", "workers", "periods", "work"))]
        log.info(f"{n:,} products: {' '.join(cmd[1:])}")
        out = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            logs.get("").info(out.stdout[-3000:] + "\n" + out.stderr[-3000:])
            raise SystemExit(f"scale run for {n} products failed (exit {out.returncode})")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        r = rows[-1]
        for e in r["epochs"]:
            log.info(f"{n:,} products, epoch {e['epoch']}: {e['wall']:.1f} s, {e['rate']:,.0f} product-periods/s "
                     f"({e['rate'] / r['step_rate']:.0%} of the step's {r['step_rate']:,.0f})")
        log.info(f"{n:,} products: driver {r['driver_peak_mib']:.0f} MiB, largest worker {r['worker_peak_mib']:.0f} MiB")
    lines = report(rows, opts, args, load)
    record_run("scale", "python -m benchmarks.scale " + " ".join(args), load)
    write_block(PROJECT_ROOT / "docs" / "performance.md", "perf:scale", "\n".join(lines), header="# Performance\n")
    logs.get("").info("\n".join(lines))
    return 0


def report(rows: list[dict], opts: dict, args: list[str], load: float | None = None) -> list[str]:
    """benchmarks/results/scale.csv and the lines of the docs block."""
    epochs = pd.DataFrame([{**{k: r[k] for k in ("products", "kind", "threads", "workers", "step_rate")}, **e}
                           for r in rows for e in r["epochs"]])
    epochs["share"] = epochs.rate / epochs.step_rate
    config = epochs.apply(lambda r: f"products={r.products};kind={r.kind};threads={r.threads};workers={r.workers};"
                                    f"epoch={r.epoch}", axis=1)
    csv = [(f"scale/{k}", c, v, unit) for c, r in zip(config, epochs.itertuples())
           for k, v, unit in (("epoch_wall_seconds", r.wall, "s"), ("compute_seconds", r.compute, "s"),
                              ("data_wait_seconds", r.data_wait, "s"), ("valid_seconds", r.valid, "s"),
                              ("checkpoint_seconds", r.checkpoint, "s"), ("job_rate", r.rate, PP),
                              ("step_rate", r.step_rate, PP), ("share_of_step", r.share, "ratio"))]
    csv += [(f"scale/{k}", f"products={r['products']};kind={r['kind']};threads={r['threads']};workers={r['workers']}",
             r[k], "MiB") for r in rows for k in ("driver_peak_mib", "worker_peak_mib", "worker_private_peak_mib")]
    results = PROJECT_ROOT / "benchmarks" / "results"
    pd.DataFrame(csv, columns=["benchmark", "config", "value", "unit"]).to_csv(results / "scale.csv", index=False)
    policy = "the CNN policy (the default)" if opts["kind"] == "cnn" else "the MLP policy [32, 32, 32]"
    lines = ["## Scale and the job end to end: epochs over 100,000 and 1,000,000 products", "",
             f"Command: `python -m benchmarks.scale {' '.join(args)}` ({time.strftime('%Y-%m-%d')}, load average at "
             f"start {os.getloadavg()[0] if load is None else load:.2f}). Synthetic products, {opts['periods']} weeks each, lost sales with "
             f"L = {LEAD_TIME}, Parquet shards of {SHARD:,}; `jobs.train` for {EPOCHS} epochs with {opts['workers']} "
             f"Ray Train worker(s) of {opts['threads']} torch thread(s): Ray Data streams the shards (kept in its "
             f"object store after the first read, `data.cache_mib`), {policy}, batches of {BATCH:,} products x "
             f"{HORIZON} periods, one window per batch. An epoch's wall time: its training (streaming and steps), "
             "validation on 2,000 products and checkpoint. The step: `benchmarks.step_speed`'s forward+backward "
             "call on the same policy, batch, horizon, lead time and threads, timed in the same process before "
             "the job (median of 5).", "",
             markdown_table(pd.DataFrame({
                 "products": [f"{r.products:,}" for r in epochs.itertuples()],
                 "epoch": epochs.epoch,
                 "wall": [f"{r.wall:.2f} s" for r in epochs.itertuples()],
                 "steps (Adam included)": [f"{r.compute:.2f} s" for r in epochs.itertuples()],
                 "waiting for data": [f"{r.data_wait:.2f} s" for r in epochs.itertuples()],
                 "validation": [f"{r.valid:.2f} s" for r in epochs.itertuples()],
                 "checkpoint": [f"{r.checkpoint:.2f} s" for r in epochs.itertuples()],
                 "job product-periods/s": [f"{r.rate:,.0f}" for r in epochs.itertuples()],
                 "step product-periods/s": [f"{r.step_rate:,.0f}" for r in epochs.itertuples()],
                 "job / step": [f"{r.share:.0%}" for r in epochs.itertuples()]})), "",
             "Peak memory per process: the driver (getrusage) and the largest Ray worker (VmHWM, including "
             "object-store pages it mapped).", "",
             markdown_table(pd.DataFrame({
                 "products": [f"{r['products']:,}" for r in rows],
                 "driver peak": [f"{r['driver_peak_mib']:,.0f} MiB" for r in rows],
                 "largest worker peak (private)": [f"{r['worker_peak_mib']:,.0f} MiB "
                                                   f"({r['worker_private_peak_mib']:,.0f} MiB)" for r in rows]}))]
    last = epochs[epochs.epoch == EPOCHS].set_index("products")
    if len(last) > 1:
        per_product = last.wall / last.index
        lines += ["", f"Epoch {EPOCHS} wall time per product, largest over smallest size: "
                      f"{per_product.iloc[-1] / per_product.iloc[0]:.2f} (1.00 is exactly linear)."]
    return lines


if __name__ == "__main__":
    run_script(main)
