"""Throughput and peak memory of the raw Favorita ingestion (``pipeline.data.favorita_sources.convert_raw``).

    python -m benchmarks.favorita_ingest [rows=20000000] [dir=/tmp/favorita-ingest]
        [frequency=weekly] [buckets=64] [keep=false]

Writes a generated raw folder in the Kaggle schema to ``dir`` (train.csv streamed to disk
day by day; reused when its ``rows`` match): 1,600 days from 2013-01-01, 50 stores x 4,000
items of which each store carries about 60% and some launch late, rows per day picked by
popularity, a few negative sales (returns), empty ``onpromotion`` before 2014-04-01 as in
the real file, and a few duplicated (date, store, item) rows; plus items.csv, stores.csv
and holidays_events.csv. Then converts it on a local Ray with one logical CPU per core and
reports wall time, rows per second and peak memory: the driver's maximum resident set size
(``getrusage``) and, polled every 0.5 s from /proc, each Ray worker's peak (VmHWM) and the
largest sum of the workers' resident sizes (VmRSS, which counts the object store pages a
worker has mapped). Writes ``benchmarks/results/favorita_ingest.csv`` and the Ingestion
section of ``docs/favorita.md``.
"""
from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from benchmarks import key_values
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

START = np.datetime64("2013-01-01")
DAYS, STORES, ITEMS = 1600, 50, 4000
PROMO_FROM = np.datetime64("2014-04-01")  # onpromotion is empty before, as in the real file
NEGATIVE_RATE, DUPLICATE_RATE, PROMO_RATE = 2e-4, 1e-5, 0.07
FAMILIES = ["GROCERY I", "BEVERAGES", "PRODUCE", "CLEANING", "DAIRY", "BREAD/BAKERY", "POULTRY", "MEATS",
            "PERSONAL CARE", "DELI", "HOME CARE", "EGGS", "FROZEN FOODS", "PREPARED FOODS", "SEAFOOD"]
PERISHABLE = {"PRODUCE", "DAIRY", "BREAD/BAKERY", "POULTRY", "MEATS", "DELI", "EGGS", "PREPARED FOODS", "SEAFOOD"}
CITIES = [("Quito", "Pichincha"), ("Guayaquil", "Guayas"), ("Cuenca", "Azuay"), ("Santo Domingo", "Santo Domingo"),
          ("Machala", "El Oro"), ("Manta", "Manabi"), ("Ambato", "Tungurahua"), ("Loja", "Loja")]
DEFAULTS = {"rows": 20_000_000, "dir": "/tmp/favorita-ingest", "frequency": "weekly", "buckets": 64, "keep": False}
MB = 1 << 20


def write_static(folder: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """items.csv, stores.csv, holidays_events.csv; returns the item numbers and whether each
    item sells by weight (fractional units)."""
    item_nbr = np.sort(rng.choice(np.arange(96_995, 2_134_245), ITEMS, replace=False))
    family = rng.choice(FAMILIES, ITEMS)
    perishable = np.isin(family, list(PERISHABLE)).astype(int)
    pd.DataFrame({"item_nbr": item_nbr, "family": family, "class": rng.integers(1000, 3000, ITEMS),
                  "perishable": perishable}).to_csv(folder / "items.csv", index=False)
    city = [CITIES[i % len(CITIES)] for i in range(STORES)]
    pd.DataFrame({"store_nbr": np.arange(1, STORES + 1), "city": [c for c, _ in city], "state": [s for _, s in city],
                  "type": rng.choice(list("ABCDE"), STORES), "cluster": rng.integers(1, 18, STORES)}
                 ).to_csv(folder / "stores.csv", index=False)
    rows = []
    for year in range(2013, 2018):
        rows += [(f"{year}-01-01", "Holiday", "National", "Ecuador", "Primer dia del ano", False),
                 (f"{year}-12-25", "Holiday", "National", "Ecuador", "Navidad", False),
                 (f"{year}-12-24", "Additional", "National", "Ecuador", "Navidad-1", False),
                 (f"{year}-08-10", "Holiday", "National", "Ecuador", "Primer Grito de Independencia", year % 2 == 0),
                 (f"{year}-08-11", "Transfer", "National", "Ecuador", "Traslado Primer Grito", False),
                 (f"{year}-01-05", "Work Day", "National", "Ecuador", "Recupero puente", False),
                 (f"{year}-05-11", "Event", "National", "Ecuador", "Dia de la Madre", False),
                 (f"{year}-11-03", "Holiday", "Regional", "Azuay", "Independencia de Cuenca", False),
                 (f"{year}-12-06", "Holiday", "Local", "Quito", "Fundacion de Quito", False),
                 (f"{year}-07-25", "Holiday", "Local", "Guayaquil", "Fundacion de Guayaquil", False)]
    pd.DataFrame(rows, columns=["date", "type", "locale", "locale_name", "description", "transferred"]
                 ).to_csv(folder / "holidays_events.csv", index=False)
    return item_nbr, np.isin(family, ["PRODUCE", "MEATS", "POULTRY", "SEAFOOD", "DELI"])


def write_train(folder: Path, rows: int, item_nbr: np.ndarray, by_weight: np.ndarray,
                rng: np.random.Generator, log=print) -> None:
    """train.csv with ``rows`` rows, one day at a time (sorted by date, store, item, as
    Kaggle's), duplicates appended after their day's rows with a later id."""
    stores = np.repeat(np.arange(1, STORES + 1), ITEMS)
    items = np.tile(np.arange(ITEMS), STORES)
    carried = rng.random(len(stores)) < 0.6
    stores, items = stores[carried], items[carried]
    launch = np.where(rng.random(len(stores)) < 0.7, 0, rng.integers(0, DAYS, len(stores)))
    popularity = rng.lognormal(0.0, 1.5, len(stores))
    per_day = np.full(DAYS, rows // DAYS) + (np.arange(DAYS) < rows % DAYS)
    next_id, tic = 0, time.time()
    with open(folder / "train.csv", "wb") as f:
        f.write(b"id,date,store_nbr,item_nbr,unit_sales,onpromotion\n")
        for day in range(DAYS):
            live = np.flatnonzero(launch <= day)
            k = min(per_day[day], len(live))
            score = np.log(rng.random(len(live))) / popularity[live]  # Efraimidis-Spirakis: k by weight
            chosen = np.sort(live[np.argpartition(score, -k)[-k:]])
            n_dup = rng.binomial(k, DUPLICATE_RATE) if k > 1 else 0
            chosen = np.r_[chosen[:k - n_dup], rng.choice(chosen[:k - n_dup], n_dup, replace=False)]
            mean = 1.0 + 3.0 * popularity[chosen]
            sales = np.where(by_weight[items[chosen]], np.round(rng.gamma(2.0, mean / 2.0), 3),
                             rng.poisson(mean) + 1.0)
            negative = rng.random(len(chosen)) < NEGATIVE_RATE
            sales[negative] = -rng.integers(1, 6, negative.sum())
            date = START + day
            promo = (np.where(rng.random(len(chosen)) < PROMO_RATE, "True", "False") if date >= PROMO_FROM
                     else np.full(len(chosen), ""))
            table = pa.table({"id": np.arange(next_id, next_id + len(chosen)),
                              "date": pa.array(np.full(len(chosen), date)).cast(pa.date32()),
                              "store_nbr": stores[chosen].astype(np.int32), "item_nbr": item_nbr[items[chosen]],
                              "unit_sales": sales, "onpromotion": promo})
            pcsv.write_csv(table, f, pcsv.WriteOptions(include_header=False, quoting_style="none"))
            next_id += len(chosen)
            if day % 200 == 199:
                log(f"[generate] day {day + 1}/{DAYS}: {next_id:,} rows ({next_id / (time.time() - tic):,.0f} rows/s)")


def generate_raw(folder: Path, rows: int, seed: int = 0, log=print) -> None:
    """The raw Kaggle files of ``rows`` train.csv rows in ``folder`` (kept if already there)."""
    stamp = folder / "rows.txt"
    if stamp.exists() and stamp.read_text().strip() == str(rows):
        log(f"[generate] reusing {folder}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    item_nbr, by_weight = write_static(folder, rng)
    write_train(folder, rows, item_nbr, by_weight, rng, log)
    stamp.write_text(str(rows))


class PeakMemory(threading.Thread):
    """Polls /proc every ``interval`` seconds for the Ray workers below this process. Per
    worker: its peak resident size (VmHWM; it includes the object store pages the worker
    has touched, shared with others) and its largest private part (RssAnon, as polled);
    over all workers: the largest sum of VmRSS and of RssAnon at one poll."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.stopped = interval, threading.Event()
        self.hwm: dict[int, int] = {}        # pid -> VmHWM bytes
        self.anon: dict[int, int] = {}       # pid -> largest RssAnon bytes
        self.tasks: dict[int, set[str]] = {}  # pid -> the process titles seen (ray::<task>)
        self.anon_by_task: dict[str, int] = {}  # task -> largest RssAnon of a worker while running it
        self.max_rss_sum = self.max_anon_sum = 0

    @staticmethod
    def _read(path: str) -> str:
        try:
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:  # the process ended
            return ""

    def workers(self) -> dict[int, str]:
        """pid -> title of the Ray workers among this process's descendants."""
        parent = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            stat = self._read(f"/proc/{pid}/stat")
            if stat:
                parent[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
        mine = {os.getpid()}
        for _ in range(4):  # driver -> raylet -> worker (and their children)
            mine |= {pid for pid, ppid in parent.items() if ppid in mine}
        title = {pid: self._read(f"/proc/{pid}/cmdline").split("\0")[0] for pid in mine}
        return {pid: t for pid, t in title.items() if "ray::" in t or "default_worker.py" in t}

    def poll(self) -> None:
        rss_sum = anon_sum = 0
        for pid, title in self.workers().items():
            fields = {k: int(v) * 1024 for k, v in
                      re.findall(r"^(VmHWM|VmRSS|RssAnon):\s+(\d+) kB", self._read(f"/proc/{pid}/status"), re.MULTILINE)}
            if len(fields) < 3:
                continue
            self.hwm[pid] = max(self.hwm.get(pid, 0), fields["VmHWM"])
            self.anon[pid] = max(self.anon.get(pid, 0), fields["RssAnon"])
            if title.startswith("ray::") and title != "ray::IDLE":
                self.tasks.setdefault(pid, set()).add(title)
                self.anon_by_task[title] = max(self.anon_by_task.get(title, 0), fields["RssAnon"])
            rss_sum += fields["VmRSS"]
            anon_sum += fields["RssAnon"]
        self.max_rss_sum = max(self.max_rss_sum, rss_sum)
        self.max_anon_sum = max(self.max_anon_sum, anon_sum)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.poll()

    def largest(self, peaks: dict[int, int]) -> tuple[int, str]:
        """The largest value of ``peaks`` and the tasks its worker ran."""
        pid = max(peaks, key=peaks.get)
        return peaks[pid], ", ".join(sorted(self.tasks.get(pid, {"no task seen"})))


def parse_args(args: list[str]) -> dict:
    return key_values(args, DEFAULTS)



def main(args: list[str]) -> int:
    opts = parse_args(args)
    from pipeline.data.favorita_sources import convert_raw
    from pipeline.adapters.ray_session import init_ray

    folder = Path(opts["dir"])
    raw, out = folder / "raw", folder / "series"
    tic = time.time()
    generate_raw(raw, opts["rows"])
    generate_s = time.time() - tic
    size = (raw / "train.csv").stat().st_size
    logs.get("generate").info(f"{raw / 'train.csv'}: {size / MB:,.0f} MiB in {generate_s:.0f}s")

    load = os.getloadavg()[0]
    init_ray(load_config([]), num_cpus=os.cpu_count())
    monitor = PeakMemory()
    monitor.start()
    tic = time.time()
    info = convert_raw(raw, out, opts["frequency"], opts["buckets"], progress=logs.get("").info)
    seconds = time.time() - tic
    monitor.stop()
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    worker_hwm, hwm_tasks = monitor.largest(monitor.hwm)
    worker_anon, anon_tasks = monitor.largest(monitor.anon)
    if not opts["keep"]:
        shutil.rmtree(out, ignore_errors=True)

    rows = info["rows_read"]
    config = f"rows={rows} frequency={opts['frequency']} buckets={opts['buckets']} cpus={os.cpu_count()}"
    results = [("wall_time", seconds, "s"), ("rows_per_second", rows / seconds, "rows/s"),
               ("driver_peak_rss", driver / MB, "MiB"), ("worker_peak_rss", worker_hwm / MB, "MiB"),
               ("worker_peak_private", worker_anon / MB, "MiB"),
               ("workers_peak_rss_sum", monitor.max_rss_sum / MB, "MiB"),
               ("workers_peak_private_sum", monitor.max_anon_sum / MB, "MiB"),
               ("workers_seen", len(monitor.hwm), "processes"), ("train_csv_size", size / MB, "MiB"),
               ("series", info["series"], "series"), ("periods", info["periods"], "periods")]
    csv = PROJECT_ROOT / "benchmarks" / "results" / "favorita_ingest.csv"
    pd.DataFrame([(name, config, value, unit) for name, value, unit in results],
                 columns=["benchmark", "config", "value", "unit"]).to_csv(csv, index=False)
    counts = ", ".join(f"{k} {info[k]:,}" for k in ("missing_sales_rows", "missing_key_rows", "rows_after_end", "duplicate_rows",
                                                     "negative_rows", "negative_units", "promo_missing_rows"))
    machine = f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    by_task = ", ".join(f"`{t}` {v / MB:,.0f}" for t, v in sorted(monitor.anon_by_task.items()))
    lines = [
        (f"Command: `python -m benchmarks.favorita_ingest rows={opts['rows']} frequency={opts['frequency']} "
         f"buckets={opts['buckets']}` ({platform.machine()}, {machine}, load average before the run "
         f"{load:.1f}, Python {sys.version.split()[0]}, local Ray with {os.cpu_count()} CPUs). Generated train.csv: "
         f"{rows:,} rows, {size / MB:,.0f} MiB; result: {info['series']:,} series x {info['periods']} "
         f"{opts['frequency']} periods. CSV: `benchmarks/results/favorita_ingest.csv`."), "",
        markdown_table(pd.DataFrame([
            ("wall time (stage 1 + stage 2)", f"{seconds:.0f} s"),
            ("rows per second", f"{rows / seconds:,.0f}"),
            ("driver peak RSS (getrusage)", f"{driver / MB:,.0f} MiB"),
            (f"largest worker peak RSS, VmHWM (object store pages included; {hwm_tasks})", f"{worker_hwm / MB:,.0f} MiB"),
            (f"largest worker private memory, RssAnon ({anon_tasks})", f"{worker_anon / MB:,.0f} MiB"),
            (f"largest sum over workers of VmRSS / RssAnon ({len(monitor.hwm)} workers)",
             f"{monitor.max_rss_sum / MB:,.0f} / {monitor.max_anon_sum / MB:,.0f} MiB")], columns=["measure", "value"])), "",
        f"Largest private memory (RssAnon, MiB) of a worker while it ran each task: {by_task}.", "",
        f"Repairs counted: {counts}.",
    ]
    logs.get("").info("\n".join(lines))
    write_block(PROJECT_ROOT / "docs" / "favorita.md", "ingest:benchmark", "\n".join(lines))
    return 0


if __name__ == "__main__":
    from jobs import _cli

    _cli.run("favorita_ingest", main)
