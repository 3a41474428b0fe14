"""Throughput, solve times and peak memory of the pipeline's parts (`make perf`).

    python -m benchmarks.perf [quick=false] [only=GROUP,...] [threads=1,2]
        [out=benchmarks/results/perf.csv] [docs=docs/performance.md] [work=DIR]

Groups (``only=`` picks some), each run in a process of its own, so that its peak resident
memory is its own (forked from a fork server that imported torch and the pipeline once):

- ``simulator`` (a): a policy rolled through a problem's simulator without gradients
  (``pipeline.core.rollout.rollout`` under ``torch.no_grad``), product-periods per second.
- ``step`` (b): one DirectBackprop step (``pipeline.core.training.train_step``: rollout, loss,
  backward through the whole rollout, gradient clipping, Adam), product-periods per second.
  Both (a) and (b): every problem (lost sales with L = 4, the other problems at their
  ``conf/problem`` defaults) with the MLP policy (hidden [32, 32, 32], ELU) and the CNN
  policy (the default), batch sizes x horizons; the headline pair (lost sales, MLP) on the
  whole grid at every thread count of ``threads``, the rest on the batch sizes at the middle
  horizon and the horizons at the middle batch size, one thread. Each value: one warm-up
  call (two for calls under 0.5 s), then the median of 3 to 7 timed calls.
- ``penalty`` (c): the structure penalty's cost per step, re-measured here by
  ``benchmarks.penalty_step.penalty_cost`` (plain and penalized steps interleaved).
- ``ingest`` (d): synthetic products (``pipeline.data.synthetic_population``) written as
  Parquet shards, read back with ``ray.data.read_parquet(...).iter_batches`` on a local Ray
  and turned into ``ProductBatch``es with ``batch_from_columns``: rows and product-periods
  per second, the first pass and the median of the later ones.
- ``ray_train`` (e): ``pipeline.adapters.ray_train.fit`` with 1 and 2 Ray Train workers (one CPU
  each; quick: 0 workers, in the driver process) on the default training config with fewer
  products: training seconds per epoch (median after the first epoch; validation not
  included), product-periods per second, and the whole ``fit`` (start-up included).
- ``dp`` (f): the exact DP of benchmark instances of every problem (``pipeline.core.dp``: the
  transition table from the problem's step, then value iteration; for lost sales also the
  specialised solver that the lost-sales suite uses), one thread.

Every group also reports its process's peak RSS (``getrusage``); the Ray groups also the
largest peak RSS of one Ray worker (VmHWM from /proc, object store pages it touched
included) and the largest sum of the workers' RSS at one poll. Writes ``out``
(``benchmark,config,value,unit``; ``config`` is ``key=value`` pairs) and ``docs``;
``only=`` replaces those groups' rows in an existing ``out``. ``quick=true``: tiny sizes,
Ray Train in the driver process (tests/test_perf_bench.py); its time is mostly the start of
each group's process, Ray and MLflow.
"""
from __future__ import annotations

import os

for _k, _v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true"}.items():
    os.environ.setdefault(_k, _v)

import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks import key_values  # noqa: E402
from pipeline.config import PROJECT_ROOT, ConfigError, resolve_path  # noqa: E402
from pipeline.core.problems import PROBLEMS as REGISTERED  # noqa: E402
from pipeline.reporting import logs  # noqa: E402
from pipeline.reporting.report_blocks import markdown_table, replace_block  # noqa: E402

COLUMNS = ["benchmark", "config", "value", "unit"]
MB = 1 << 20
PP = "product-periods/s"
# group: (letter of its section in docs/performance.md, title, the benchmarks it writes and their units); each group also
# writes peak_rss (and the Ray groups ray_worker_peak_rss, ray_workers_peak_rss_sum), in MiB
GROUPS = {
    "simulator": ("a", "Simulator forward, no gradients", {"simulator_forward": PP}),
    "step": ("b", "DirectBackprop step, forward and backward", {"step_forward_backward": PP}),
    "penalty": ("c", "Structure penalty per step",
                {"penalty_step_plain": "ms", "penalty_step_penalized": "ms", "penalty_overhead": "%"}),
    "ingest": ("d", "Ray Data ingest from Parquet", {"ingest_rows": "rows/s", "ingest_product_periods": PP}),
    "ray_train": ("e", "Ray Train epochs",
                  {"ray_train_epoch": "s", "ray_train_throughput": PP, "ray_train_fit": "s"}),
    "dp": ("f", "Exact DP solve times", {"dp_transitions": "s", "dp_solve": "s"}),
}
MEMORY = {"peak_rss": "MiB", "ray_worker_peak_rss": "MiB", "ray_workers_peak_rss_sum": "MiB"}
RAY_GROUPS = ("ingest", "ray_train")
UNITS = {**{b: u for _, _, bs in GROUPS.values() for b, u in bs.items()}, **MEMORY}

# every registered problem at its conf/problem defaults, but lost sales with L = 4 (the headline)
SETTINGS = {"lost_sales": ["data.lead_time_range=[4,4]"]}
PROBLEMS = {name: SETTINGS.get(name, []) for name in REGISTERED}
POLICIES = {"mlp": ["policy.kind=mlp", "policy.hidden=[32,32,32]", "policy.structure=free"],
            "cnn": ["policy.kind=cnn", "policy.structure=free"]}
HEADLINE = ("lost_sales", "mlp")  # on the whole grid, at every thread count
TARGET = 3_000_000  # product-periods/s of the headline step on 2 cores (docs/performance.md)
TEMPLATE = PROJECT_ROOT / "docs" / "performance.md"  # the prose around the blocks this suite writes
START = 52  # rollouts start here (train.history): the CNN's window fits before it

SIZES = {
    "full": {
        "batches": (256, 1024, 8192), "horizons": (20, 50, 100), "budget_s": 3.0, "headline_only_threads": False,
        "penalty_steps": 20, "penalty_batch": 256, "penalty_horizon": 60,
        "ingest_products": 100_000, "ingest_periods": 208, "ingest_shard_rows": 5_000, "ingest_batch": 1_024,
        "ingest_passes": 3,
        # the default training config (make run), fewer products: about 10 s per epoch on one worker
        "train_args": ["data.num_products=4000", "train.epochs=3"], "train_workers": (1, 2),
        "dp_timed": None,  # every instance each suite times (its TIMED)
        "dp_lost_sales": [{"p": 4, "L": 2}, {"p": 19, "L": 4}],  # the specialised solver
        "expected_s": {"simulator": 100, "step": 260, "penalty": 70, "ingest": 40, "ray_train": 110, "dp": 50},
    },
    "quick": {
        "batches": (32,), "horizons": (10,), "budget_s": 0.05, "headline_only_threads": True,
        "penalty_steps": 2, "penalty_batch": 32, "penalty_horizon": 10,
        "ingest_products": 400, "ingest_periods": 208, "ingest_shard_rows": 100, "ingest_batch": 128,
        "ingest_passes": 2,
        "train_args": ["experiment=smoke", "data.num_products=50", "train.epochs=2", "train.windows_per_batch=2"],
        "train_workers": (0,),  # in the driver process: Ray Train's worker actors take 30-50 s to start here
        "dp_timed": 1,  # the first instance each suite times
        "dp_lost_sales": [{"p": 4, "L": 2}],
        "expected_s": {"simulator": 4, "step": 5, "penalty": 6, "ingest": 10, "ray_train": 25, "dp": 4},
    },
}
DEFAULTS = {"quick": False, "only": "", "threads": "1,2", "out": "benchmarks/results/perf.csv",
            "docs": "docs/performance.md", "work": ""}
# what each group's process starts with: imported once, in the fork server
PRELOAD = ["benchmarks.perf", "benchmarks.penalty_step", "pipeline.core.dp", "torch._dynamo"]

Row = tuple[str, str, float, str]


def parse_args(args: list[str]) -> dict:
    opts = key_values(args, DEFAULTS)
    only = [g for g in opts["only"].split(",") if g]
    unknown = [g for g in only if g not in GROUPS]
    if unknown:
        raise ConfigError(f"only: unknown group {unknown[0]!r}; groups: {', '.join(GROUPS)}")
    opts["groups"] = only or list(GROUPS)
    try:
        opts["thread_counts"] = [int(t) for t in opts["threads"].split(",") if t]
    except ValueError:
        raise ConfigError(f"threads: expected thread counts like 1,2, got {opts['threads']!r}") from None
    if not opts["thread_counts"] or min(opts["thread_counts"]) < 1:
        raise ConfigError(f"threads: expected thread counts of at least 1, got {opts['threads']!r}")
    return opts


def label(**items) -> str:
    return " ".join(f"{k}={v}" for k, v in items.items())


def median_seconds(fn: Callable[[], object], budget_s: float) -> tuple[float, int]:
    """(median seconds of one call, calls timed): one warm-up call (two when a call takes
    under 0.5 s), then as many calls as fit in ``budget_s``, at least 3 and at most 7."""
    tic = time.perf_counter()
    fn()
    first = time.perf_counter() - tic
    if first < 0.5:
        tic = time.perf_counter()
        fn()
        first = time.perf_counter() - tic
    n = int(min(7, max(3, budget_s // max(first, 1e-9))))
    times = []
    for _ in range(n):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times), n


def once_or_median(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds of one call, what it returned); for a call under 0.5 s, the median of it
    and 3 more."""
    times = []
    while not times or (times[0] < 0.5 and len(times) < 4):
        tic = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times), result


# ---------------------------------------------------------------- (a), (b): simulator and step

def rollout_grid(s: dict, thread_counts: list[int]) -> list[tuple[str, str, int, int, int]]:
    """(problem, policy, batch, horizon, threads) of (a) and (b): the headline pair on every
    batch x horizon (quick: on the headline shape only) at every thread count, the others on
    the batches at the middle horizon and the horizons at the middle batch at the first."""
    batches, horizons = s["batches"], s["horizons"]
    mid_b, mid_h = batches[len(batches) // 2], horizons[len(horizons) // 2]
    cross = [(b, mid_h) for b in batches] + [(mid_b, h) for h in horizons if h != mid_h]
    whole = [(b, h) for b in batches for h in horizons]
    grid = [(p, k, b, h, thread_counts[0]) for p in PROBLEMS for k in POLICIES
            for b, h in (whole if (p, k) == HEADLINE else cross)]
    more = [headline_shape(s)] if s["headline_only_threads"] else whole
    grid += [(*HEADLINE, b, h, t) for t in thread_counts[1:] for b, h in more]
    return grid


def problem_label(name: str, settings: list[str]) -> str:
    """A problem as the rows name it: with its lead time where ``settings`` fix one
    (``lost_sales(L=4)``)."""
    for arg in settings:
        key, _, value = arg.partition("=")
        if key == "data.lead_time_range":
            lo, hi = (int(v) for v in value.strip("[]").split(","))
            if lo == hi:
                return f"{name}(L={lo})"
    return name


def headline_shape(s: dict) -> tuple[int, int]:
    """(batch, horizon) of the headline row: the largest batch at the middle horizon."""
    return max(s["batches"]), s["horizons"][len(s["horizons"]) // 2]


def rollout_group(s: dict, thread_counts: list[int], backward: bool, log) -> list[Row]:
    from benchmarks.penalty_step import setup
    from pipeline.core.training import TrainSpec, train_step
    from pipeline.core.rollout import rollout

    name = "step_forward_backward" if backward else "simulator_forward"
    grid = rollout_grid(s, thread_counts)
    total = sum(b * h for _, _, b, h, _ in grid)
    rows, done, tic = [], 0, time.time()
    for i, (problem_name, kind, B, H, threads) in enumerate(grid):
        torch.set_num_threads(threads)
        args = [f"problem={problem_name}", *POLICIES[kind], *PROBLEMS[problem_name], f"data.num_products={B}",
                f"data.periods={max(START + H, 208)}", f"train.history={START}", f"train.horizon={H}",
                f"train.warmup={min(10, H // 2)}"]
        cfg, problem, width, batch, policy, optimizer = setup(args)
        spec = TrainSpec.from_config(cfg, problem, width)
        call = (partial(train_step, policy, optimizer, problem, batch, START, spec) if backward
                else partial(torch.no_grad()(rollout), problem, policy, batch, START, H, width))
        seconds, n = median_seconds(call, s["budget_s"])
        policy_label = f"mlp{list(cfg.policy.hidden)}".replace(" ", "") if kind == "mlp" else "cnn"
        rows.append((name, label(problem=problem_label(problem_name, PROBLEMS[problem_name]), policy=policy_label, batch=B, horizon=H, threads=threads),
                     B * H / seconds, PP))
        done += B * H
        left = (time.time() - tic) / done * (total - done)
        log(f"[perf {name}] {i + 1}/{len(grid)} {rows[-1][1]}: {B * H / seconds:,.0f} {PP} "
            f"({1000 * seconds:.1f} ms per call, median of {n}); about {left / 60:.1f} min left in this group")
    return rows


# ---------------------------------------------------------------- (c): structure penalty

def penalty_group(s: dict, log) -> list[Row]:
    from benchmarks.penalty_step import CASES, penalty_cost

    torch.set_num_threads(1)
    rows = []
    cases = [(name, kind) for name in CASES for kind in POLICIES]
    for i, (name, kind) in enumerate(cases):
        plain, penalized, _, config = penalty_cost(name, kind, s["penalty_steps"], s["penalty_batch"],
                                                         s["penalty_horizon"])
        problem_name, kind, *rest = config.split()
        config = label(problem=problem_label(name, CASES[name]), policy=kind,
                       threads=1, steps=s["penalty_steps"]) + " " + " ".join(rest)
        overhead = 100 * (penalized - plain) / plain
        rows += [("penalty_step_plain", config, 1000 * plain, "ms"),
                 ("penalty_step_penalized", config, 1000 * penalized, "ms"),
                 ("penalty_overhead", config, overhead, "%")]
        log(f"[perf penalty] {i + 1}/{len(cases)} {config}: {1000 * plain:.1f} ms plain, "
            f"{1000 * penalized:.1f} ms penalized ({overhead:+.1f}%)")
    return rows


# ---------------------------------------------------------------- (d), (e): Ray

def ingest_group(s: dict, work: Path, log) -> list[Row]:
    import ray

    from pipeline.config import load_config
    from pipeline.core.batch import batch_from_columns
    from pipeline.data.synthetic import synthetic_population
    from pipeline.data.parquet import to_arrow, write_shards
    from pipeline.adapters.ray_session import init_ray

    n, periods = s["ingest_products"], s["ingest_periods"]
    cfg = load_config([f"data.num_products={n}", f"data.periods={periods}"])
    folder = work / "ingest"
    tic = time.time()
    paths = write_shards(to_arrow(synthetic_population(cfg.data, cfg.seed)), folder, s["ingest_shard_rows"])
    size = sum(p.stat().st_size for p in paths)
    log(f"[perf ingest] wrote {n:,} products x {periods} periods, {len(paths)} shards, {size / MB:.0f} MiB "
        f"in {time.time() - tic:.1f}s")
    init_ray(cfg, num_cpus=os.cpu_count())
    ray.data.DataContext.get_current().use_datasource_v2 = False  # the reader pipeline.adapters.ray_train.fit uses
    rates = []
    for k in range(s["ingest_passes"]):
        tic, rows = time.perf_counter(), 0
        for columns in ray.data.read_parquet(str(folder)).iter_batches(batch_size=s["ingest_batch"],
                                                                      batch_format="numpy"):
            rows += batch_from_columns(columns).size
        seconds = time.perf_counter() - tic
        if rows != n:
            raise RuntimeError(f"ingest read {rows} rows of {n}")
        rates.append(rows / seconds)
        log(f"[perf ingest] pass {k + 1}/{s['ingest_passes']}: {rows:,} rows in {seconds:.2f}s, "
            f"{rows / seconds:,.0f} rows/s, {rows * periods / seconds:,.0f} {PP}")
    base = dict(products=n, periods=periods, shards=len(paths), MiB=round(size / MB), batch=s["ingest_batch"],
                cpus=os.cpu_count())
    out = []
    for which, rate in (("first", rates[0]), ("later", statistics.median(rates[1:]))):
        config = label(**base, passes=which)
        out += [("ingest_rows", config, rate, "rows/s"), ("ingest_product_periods", config, rate * periods, PP)]
    return out


def ray_train_group(s: dict, work: Path, log) -> list[Row]:
    from pipeline.config import load_config
    from pipeline.data.parquet import count_rows
    from pipeline.data.synthetic import materialize
    from pipeline.adapters.training_run import train
    from pipeline.adapters.ray_session import init_ray, local_cpus
    from pipeline.adapters.tracking import Tracker

    uri = f"sqlite:///{work / 'mlflow.db'}"
    rows = []
    for workers in s["train_workers"]:
        cfg = load_config([*s["train_args"], f"name=perf-workers-{workers}", f"output_dir={work}",
                           f"mlflow.tracking_uri={uri}", "mlflow.experiment=perf",
                           f"train.num_workers={workers}", "train.cpus_per_worker=1"])
        if not rows:
            most = max(s["train_workers"])
            init_ray(cfg, num_cpus=local_cpus(load_config([*s["train_args"], f"train.num_workers={most}"])))
        splits = materialize(cfg.data, cfg.seed, work)
        for old in (work / cfg.name, work / "ray" / cfg.name):  # a fresh run: nothing to resume from
            shutil.rmtree(old, ignore_errors=True)
        tracker = Tracker(cfg)
        tracker.start(cfg, kind="train", data=splits["train"].parent, resume=False)
        log(f"[perf ray_train] fit with {workers} worker(s), {cfg.train.epochs} epochs ...")
        tic = time.time()
        train(cfg, splits=splits, run_dir=work / cfg.name, tracker=tracker, evaluate=False)
        fit_s = time.time() - tic
        epoch_s = [v for _, v in tracker.metric_history("train/epoch_seconds")]
        steps = [v for _, v in tracker.metric_history("train/steps")]
        tracker.finish()
        world = max(1, workers)  # 0: one worker, in the driver process
        batch = min(cfg.train.batch_size, count_rows(splits["train"]) // world)
        seconds = statistics.median(epoch_s[1:] or epoch_s)
        per_epoch = world * steps[-1] * batch * cfg.train.horizon  # every worker takes rank 0's steps
        config = label(workers=workers, problem=cfg.problem.name, policy=cfg.policy.kind,
                       products=count_rows(splits["train"]), batch=batch, horizon=cfg.train.horizon,
                       steps=int(steps[-1]), epochs=cfg.train.epochs)
        rows += [("ray_train_epoch", config, seconds, "s"), ("ray_train_throughput", config, per_epoch / seconds, PP),
                 ("ray_train_fit", config, fit_s, "s")]
        log(f"[perf ray_train] {config}: {seconds:.1f}s per epoch, {per_epoch / seconds:,.0f} {PP}, "
            f"fit {fit_s:.0f}s")
    return rows


# ---------------------------------------------------------------- (f): exact DP

def dp_cases(s: dict) -> list[tuple[str, dict]]:
    """(suite, instance) of (f): the instances each benchmark suite times (its ``TIMED``;
    quick: the first of each), in registry order."""
    from pipeline.studies.suites import SUITES

    return [(name, inst) for name, suite in SUITES.items() for inst in suite.timed[:s["dp_timed"]]]


def dp_group(s: dict, log) -> list[Row]:
    from pipeline.core import dp
    from pipeline.core.demand import true_pmf
    from pipeline.studies.suites import SUITES, instance_key
    from pipeline.studies.suites import lost_sales_suite as lost_sales_suite

    rows = []
    with dp.one_thread():  # as the benchmark suites run it
        for name, inst in dp_cases(s):
            case = SUITES[name].dp_instance(inst)
            build_s, trans = once_or_median(partial(dp.transitions, case.problem, case.product, case.space, case.pmf))
            solve_s, solution = once_or_median(partial(dp.solve, trans, case.discount,
                                                       aperiodic=dp.lazy(case.discount)))
            config = label(problem=name, instance=instance_key(inst), solver="generic", states=case.space.size,
                           actions=len(case.space.actions), iterations=solution.iterations)
            rows += [("dp_transitions", config, build_s, "s"), ("dp_solve", config, solve_s, "s")]
            log(f"[perf dp] {config}: table {build_s:.2f}s, solve {solve_s:.2f}s")
        for inst in s["dp_lost_sales"]:
            pmf = true_pmf(lost_sales_suite.product(inst["p"], inst["L"]))[0]  # Poisson(5), h = 1, as the suite
            solve_s, sol = once_or_median(partial(dp.lost_sales_optimum, pmf, 1.0, float(inst["p"]), inst["L"],
                                                  5.0, math.sqrt(5.0)))
            config = label(problem="lost_sales", instance=instance_key(inst), solver="lost_sales_rvi",
                           states=sol.values.numel(), actions=sol.max_order + 1, iterations=sol.iterations)
            rows.append(("dp_solve", config, solve_s, "s"))
            log(f"[perf dp] {config}: solve {solve_s:.2f}s")
    return rows


# ---------------------------------------------------------------- one group, in its own process

def run_group(group: str, opts: dict, work: Path, log=logs.get("").info) -> list[Row]:
    s = SIZES["quick" if opts["quick"] else "full"]
    monitor = None
    if group in RAY_GROUPS:
        from benchmarks.favorita_ingest import PeakMemory

        monitor = PeakMemory()
        monitor.start()
    if group in ("simulator", "step"):
        rows = rollout_group(s, opts["thread_counts"], group == "step", log)
    elif group == "penalty":
        rows = penalty_group(s, log)
    elif group == "ingest":
        rows = ingest_group(s, work, log)
    elif group == "ray_train":
        rows = ray_train_group(s, work, log)
    else:
        rows = dp_group(s, log)
    config = f"group={group}"
    rows.append(("peak_rss", config, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB, "MiB"))
    if monitor is not None:
        monitor.stop()
        if monitor.hwm:
            worker, _ = monitor.largest(monitor.hwm)
            config = f"group={group} workers_seen={len(monitor.hwm)}"
            rows += [("ray_worker_peak_rss", config, worker / MB, "MiB"),
                     ("ray_workers_peak_rss_sum", config, monitor.max_rss_sum / MB, "MiB")]
        import ray

        ray.shutdown()
    return rows


# ---------------------------------------------------------------- the machine and the report

def machine() -> dict[str, str]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    cpuinfo = read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    cores = {tuple(block.get(k) for k in ("physical id", "core id")) for block in
             ({k.strip(): v.strip() for k, _, v in (line.partition(":") for line in chunk.splitlines())}
              for chunk in cpuinfo.split("\n\n") if chunk.strip())}
    mem = next((int(line.split()[1]) * 1024 for line in read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal")), 0)
    release = next((line.split("=", 1)[1].strip('"') for line in read("/etc/os-release").splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {"CPU": f"{model} ({platform.machine()})",
            "cores": f"{os.cpu_count()} logical" + (f", {len(cores)} physical" if len(cores) > 1 or
                                                   any(c != (None, None) for c in cores) else ""),
            "RAM": f"{mem / 2**30:.1f} GiB", "OS": f"{release}, Linux {platform.release()}",
            "Python / torch / ray": f"{platform.python_version()} / {torch.__version__} / {version('ray')}",
            "torch threads by default": str(torch.get_num_threads())}


def parse_config(config: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config.split())


def table(frame: pd.DataFrame, columns: list[str], value: str, fmt: Callable[[float], str]) -> str:
    """A Markdown table: the config's keys in ``columns``, then the value."""
    cells = [[parse_config(c).get(k, "") for k in columns] + [fmt(v)] for c, v in zip(frame.config, frame.value)]
    return markdown_table(pd.DataFrame(cells, columns=columns + [value]))


def pivot(frame: pd.DataFrame) -> str:
    """Batch x horizon table of a rollout benchmark's rows (one problem, policy, thread count)."""
    shape = lambda c: (int(parse_config(c)["batch"]), int(parse_config(c)["horizon"]))  # noqa: E731
    cells = {shape(c): v for c, v in zip(frame.config, frame.value)}
    batches, horizons = sorted({b for b, _ in cells}), sorted({h for _, h in cells})
    wide = pd.DataFrame([[b] + [cells.get((b, h), float("nan")) for h in horizons] for b in batches],
                        columns=["batch \\ horizon"] + [str(h) for h in horizons])
    return markdown_table(wide, {str(h): ",.0f" for h in horizons})


NOT_RUN = "Not measured: no rows of this group in the CSV."


def render(frame: pd.DataFrame, info: dict[str, str], opts: dict) -> dict[str, str]:
    """The generated blocks of ``docs/performance.md`` (key: body): the machine and the
    headline, each group's tables and peak memory. The prose around them, what each group
    measures and how, is the Markdown file's own."""
    s = SIZES["quick" if opts["quick"] else "full"]
    num = lambda v: f"{v:,.0f}"  # noqa: E731
    rows = lambda name: frame[frame.benchmark == name]  # noqa: E731
    machine = markdown_table(pd.DataFrame(list(info.items()), columns=["", ""]))
    out = ["## Machine and run", "", machine, ""]
    B, H = headline_shape(s)
    head = rows("step_forward_backward")
    head = head[head.config.str.contains("problem=lost_sales\\(L=4\\) policy=mlp") &
                head.config.str.contains(f" batch={B} horizon={H} ")]
    if len(head):
        out += ["## Headline", "",
                f"DirectBackprop step (rollout, loss, backward through all {H} periods, Adam) of the MLP "
                f"policy (hidden [32, 32, 32], ELU) on lost sales with L = 4, batch {B}: "
                + ", ".join(f"**{v:,.0f}** product-periods/s on {parse_config(c)['threads']} thread(s)"
                            for c, v in zip(head.config, head.value))
                + f". The target: at least {TARGET:,} on 2 cores.", ""]
    blocks = {"perf:machine": "\n".join(out).rstrip()}
    for group, (letter, title, benchmarks) in GROUPS.items():
        part = frame[frame.benchmark.isin(list(benchmarks))]
        if part.empty:
            blocks[f"perf:{group}"] = NOT_RUN
            continue
        out = []
        if group in ("simulator", "step"):
            name = next(iter(benchmarks))
            for threads in sorted({parse_config(c)["threads"] for c in part.config}, key=int):
                sub = part[part.config.str.contains("problem=lost_sales\\(L=4\\) policy=mlp")
                           & part.config.str.endswith(f"threads={threads}")]
                if len(sub):
                    out += [f"Lost sales (L = 4), MLP, {threads} thread(s), product-periods/s:", "", pivot(sub), ""]
            out += ["Every configuration:", "",
                    table(part, ["problem", "policy", "threads", "batch", "horizon"],
                          name.replace("_", " ") + " " + PP, num)]
        elif group == "penalty":
            wide = part.pivot_table(index="config", columns="benchmark", values="value", sort=False)
            cells = [[*(parse_config(config)[k] for k in ("problem", "policy", "properties", "batch", "horizon")),
                      r.penalty_step_plain, r.penalty_step_penalized, r.penalty_overhead]
                     for config, r in wide.iterrows()]
            out += [f"{s['penalty_steps']} steps each.", "", markdown_table(
                pd.DataFrame(cells, columns=["problem", "policy", "properties", "batch", "horizon", "plain ms",
                                             "penalized ms", "overhead"]),
                {"plain ms": ".1f", "penalized ms": ".1f", "overhead": lambda v: f"{v:+.1f}%"})]
        elif group == "ingest":
            c = parse_config(part.config.iloc[0])
            cells = [[which, *part[part.config.str.endswith(f"passes={which}")].set_index("benchmark").value[
                ["ingest_rows", "ingest_product_periods"]]] for which in ("first", "later")]
            out += [f"{int(c['products']):,} products x {c['periods']} periods, {c['shards']} shards, "
                    f"{c['MiB']} MiB; {c['cpus']} CPUs; `batch_size={c['batch']}`.", "",
                    markdown_table(pd.DataFrame(cells, columns=["passes", "rows/s", "product-periods/s"]),
                                   {"rows/s": ",.0f", "product-periods/s": ",.0f"})]
        elif group == "ray_train":
            cells = []
            for config in dict.fromkeys(part.config):
                c, p = parse_config(config), part[part.config == config].set_index("benchmark").value
                cells.append([c["workers"], int(c["products"]), f"{c['batch']} x {c['horizon']}", c["steps"],
                              p["ray_train_epoch"], p["ray_train_throughput"], p["ray_train_fit"]])
            out += [markdown_table(
                pd.DataFrame(cells, columns=["workers", "training products", "batch x horizon",
                                             "steps per worker per epoch", "s per epoch", "product-periods/s",
                                             "fit s"]),
                {"training products": ",", "s per epoch": ".1f", "product-periods/s": ",.0f", "fit s": ".0f"})]
        else:
            cells = []
            for config in dict.fromkeys(part.config):
                c, p = parse_config(config), part[part.config == config].set_index("benchmark").value
                cells.append([c["problem"], c["instance"], c["solver"], int(c["states"]), c["actions"],
                              c["iterations"], p.get("dp_transitions", float("nan")), p["dp_solve"]])
            out += [markdown_table(
                pd.DataFrame(cells, columns=["problem", "instance", "solver", "states", "actions", "iterations",
                                             "table s", "solve s"]),
                {"states": ",", "table s": ".3f", "solve s": ".3f"})]
        blocks[f"perf:{group}"] = "\n".join(out)
    memory = frame[frame.benchmark.isin(list(MEMORY))]
    cells = []
    for group in GROUPS:
        m = {b: v for b, c, v in zip(memory.benchmark, memory.config, memory.value)
             if parse_config(c)["group"] == group}
        if m:
            cells.append([f"{GROUPS[group][0]} {group}", *(m.get(k, float("nan")) for k in MEMORY)])
    columns = ["group", "process peak RSS MiB", "largest Ray worker peak MiB", "Ray workers' RSS sum MiB"]
    blocks["perf:memory"] = (markdown_table(pd.DataFrame(cells, columns=columns), {c: ",.0f" for c in columns[1:]})
                             if cells else NOT_RUN)
    return blocks


# ---------------------------------------------------------------- driver

def child(group: str, opts: dict, work: Path, part: Path) -> None:
    rows = run_group(group, opts, work)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(part, index=False)


def run_in_own_process(group: str, opts: dict, work: Path, part: Path) -> int | None:
    """Run one group in a process of its own, so that its peak RSS is its own; the process
    is forked from a fork server that has imported torch and the pipeline once (``PRELOAD``),
    not from this one (which may hold threads or a Ray connection). Returns its exit code."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    process = ctx.Process(target=child, args=(group, opts, work, part), name=f"perf-{group}")
    process.start()
    process.join()
    return process.exitcode


def main(args: list[str]) -> int:
    opts = parse_args(args)
    mode = "quick" if opts["quick"] else "full"
    expected = SIZES[mode]["expected_s"]
    out, docs = resolve_path(opts["out"]), resolve_path(opts["docs"])
    command = "python -m benchmarks.perf" + "".join(f" {a}" for a in args)
    info = machine()
    info.update({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "command": f"`{command}`", "mode": mode,
                 "load average at start (1 min)": f"{os.getloadavg()[0]:.2f}"})
    log = logs.get("perf")
    log.info(f"{mode} run of {', '.join(opts['groups'])} on {info['CPU']}, {info['cores']}; "
             f"load {info['load average at start (1 min)']}")
    frames, failed = [], []
    started = time.time()
    work_root = Path(opts["work"]) if opts["work"] else Path(tempfile.mkdtemp(prefix="sidbp-perf-"))
    try:
        for i, group in enumerate(opts["groups"]):
            done = opts["groups"][:i]
            left = sum(expected[g] for g in opts["groups"][i:])
            if done:
                left *= (time.time() - started) / sum(expected[g] for g in done)
            log.info(f"group {i + 1}/{len(opts['groups'])}: ({GROUPS[group][0]}) {group}, "
                     f"elapsed {time.time() - started:.0f}s, about {left / 60:.1f} min left")
            work = work_root / group
            work.mkdir(parents=True, exist_ok=True)
            part = work / "rows.csv"
            tic = time.time()
            rc = run_in_own_process(group, opts, work, part)
            if rc != 0 or not part.exists():
                log.info(f"group {group} FAILED (exit code {rc}); continuing")
                failed.append(group)
                continue
            frames.append(pd.read_csv(part))
            log.info(f"group {group} done in {time.time() - tic:.0f}s")
    finally:
        if not opts["work"]:
            shutil.rmtree(work_root, ignore_errors=True)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    if opts["only"] and out.exists():  # keep the other groups' rows of an earlier run
        earlier = pd.read_csv(out)
        rerun = {b for g in opts["groups"] for b in GROUPS[g][2]}
        keep = ~earlier.benchmark.isin(list(rerun)) & ~earlier.config.str.split().str[0].isin(
            [f"group={g}" for g in opts["groups"]])
        frame = pd.concat([earlier[keep], frame], ignore_index=True)
        order = {b: i for i, b in enumerate(UNITS)}
        frame = frame.sort_values("benchmark", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    info["load average at the end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    info["wall time"] = f"{time.time() - started:.0f} s"
    if opts["only"]:
        info["wall time"] += f" (groups {', '.join(opts['groups'])}; the other groups' rows are from earlier runs)"
    text = docs.read_text() if docs.exists() else TEMPLATE.read_text()  # a new file: the project's prose
    for key, body in render(frame, info, opts).items():
        text = replace_block(text, key, body)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)
    log.info(f"wrote {out} ({len(frame)} rows) and {docs} in {time.time() - started:.0f}s")
    if failed:
        print(f"[perf] failed groups: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
