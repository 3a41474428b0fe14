"""Speed of the DirectBackprop core: product-periods per second through rollout and loss.

    python -m benchmarks.step_speed [threads=1,2] [repeats=10] [batch=8192] [horizon=50]
        [lead_time=4] [kind=mlp] [hidden=] [device=cpu] [compile=false]
        [compile_mode=default] [profile=false] [rows=25] [docs=false]

Headline config (docs/performance.md, The headline step): lost sales with lead time 4,
8192 products x 50 periods, float32, the policies of ``kind`` (comma-separated): ``cnn``, the
default network (dilated causal CNN encoder, head [32, 32]), and ``mlp`` (no encoder,
hidden [32, 32, 32]), both ELU; ``hidden`` overrides the head of every kind. Three
measurements, each the median of ``repeats`` calls after two warm-up calls, interleaved
call by call (so that a slow spell of the machine falls on all of them alike), for each
policy, at each batch size of ``batch`` and each thread count of ``threads``:

- ``forward+backward``: ``rollout`` + ``period_loss`` + ``directbackprop_loss`` and
  ``loss.backward()`` (a training step without the optimiser);
- ``forward``: the same without the backward (the autograd graph is still recorded);
- ``no_grad``: the rollout and loss under ``torch.no_grad`` (evaluation, simulation).

``device=cuda`` runs on the GPU: the batch and the network are moved there once, every
period's work stays there, and each timed call ends with ``torch.cuda.synchronize()``.
The GPU measurement of docs/performance.md (GPU):

    python -m benchmarks.step_speed device=cuda batch=65536,131072,262144,524288,1048576 \\
        repeats=5 compile=true compile_mode=reduce-overhead docs=true

(eager, and compiled with CUDA graphs, interleaved).

``compile=true`` also times the three calls with ``policy.period`` (the network's
per-period work) and ``problem.step`` (the simulator's) run through ``torch.compile``
(``compile_mode``: default, reduce-overhead = CUDA graphs, max-autotune, ...), on a copy of
the same weights, interleaved with the eager calls; it reports how long the first compiled
calls took (compilation included). Optional and not used by training: a compiled period has no
double backward (the structure penalty needs one) and recompiles for every new batch shape.

``profile=true`` also prints torch.profiler's top ``rows`` ops (by self time, grouped by
input shape) of one forward+backward call of the first policy at the largest batch size and
the first thread count. ``docs=true`` writes the table (and the profile) into
``docs/performance.md``, in the block ``perf:step_<device>``, and the rows to
``benchmarks/results/step_speed_<device>.csv``.
"""
from __future__ import annotations

import copy
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks import key_values, record_run, run_script
from pipeline.config import ConfigError, load_config
from pipeline.core.batch import batch_from_columns
from pipeline.data.synthetic import synthetic_population
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block
from pipeline.core.policy import OrderPolicy
from pipeline.core.problems import get_problem
from pipeline.core.rollout import directbackprop_loss, period_loss, rollout

DEFAULTS = {"threads": "1,2", "repeats": 10, "batch": "8192", "horizon": 50, "lead_time": 4,
            "kind": "mlp", "hidden": "", "device": "cpu", "compile": False,
            "compile_mode": "default", "profile": False, "rows": 25, "docs": False}
DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
RESULTS = DEFAULT_RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
HIDDEN = {"cnn": (32, 32), "mlp": (32, 32, 32)}  # each kind's head: the default network's; the MLP of the docs


def ints(text: str, key: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{key} takes comma-separated integers, got {text!r}") from None


def setup(batch_size: int, horizon: int, lead_time: int, kind: str, hidden: tuple[int, ...],
          device: str = "cpu"):
    """(problem, policy, batch, start, width, warmup) of the benchmark config, on ``device``."""
    cfg = load_config([f"data.num_products={batch_size}", f"data.lead_time_range=[{lead_time},{lead_time}]",
                       f"train.horizon={horizon}", f"policy.kind={kind}"])
    problem = get_problem("lost_sales")
    width = problem.state_width(lead_time)
    batch = batch_from_columns(synthetic_population(cfg.data, cfg.seed)).to(device)
    torch.manual_seed(0)
    policy = OrderPolicy(width, kind=kind, hidden=hidden).to(device)
    return problem, policy, batch, cfg.train.history, width, cfg.train.warmup


def step_calls(problem, policy, batch, start: int, horizon: int, width: int, warmup: int) -> dict:
    """The three timed calls, by name."""
    def forward():
        traj = rollout(problem, policy, batch, start, horizon, width)
        return directbackprop_loss(period_loss(traj, batch, "cost"), warmup, 1.0)

    def forward_backward():
        policy.zero_grad(set_to_none=True)
        forward().backward()

    def no_grad():
        with torch.no_grad():
            forward()

    return {"forward+backward": forward_backward, "forward": forward, "no_grad": no_grad}


def time_calls(calls: dict, repeats: int, sync) -> dict[str, float]:
    """Median seconds of each call over ``repeats`` rounds after two warm-up rounds."""
    times = {name: [] for name in calls}
    for i in range(repeats + 2):
        for name, call in calls.items():
            tic = time.perf_counter()
            call()
            sync()
            if i >= 2:
                times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(ts) for name, ts in times.items()}


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads by default"


def policy_overrides(kind: str) -> list[str]:
    """The config overrides of a policy ``kind`` of ``HIDDEN`` (the other benchmarks' policies)."""
    if kind not in HIDDEN:
        raise ConfigError(f"kind takes {' or '.join(HIDDEN)}, got {kind!r}")
    return [f"policy.kind={kind}", f"policy.hidden=[{','.join(map(str, HIDDEN[kind]))}]"]


def kinds_and_heads(a: dict) -> dict[str, tuple[int, ...]]:
    """Each policy kind of ``kind`` with its head (``hidden`` for all when given)."""
    kinds = a["kind"].split(",")
    unknown = [k for k in kinds if k not in HIDDEN]
    if unknown:
        raise ConfigError(f"kind takes {' and/or '.join(HIDDEN)}, got {unknown[0]!r}")
    return {k: tuple(ints(a["hidden"], "hidden")) if a["hidden"] else HIDDEN[k] for k in kinds}


def main(argv: list[str]) -> None:
    a = key_values(argv, DEFAULTS)
    threads, sizes = ints(a["threads"], "threads"), ints(a["batch"], "batch")
    heads = kinds_and_heads(a)
    device = a["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but torch {torch.__version__} sees no CUDA device")
    if device.startswith("cuda"):
        threads = threads[:1]  # the host threads do not matter for the GPU's kernels
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    mode = f", eager and compiled (mode {a['compile_mode']})" if a["compile"] else ""
    load = os.getloadavg()[0]
    policies = ", ".join(f"{k} (head {list(h)})" for k, h in heads.items())
    head = (f"lost sales L={a['lead_time']}, policies {policies}, {a['horizon']} periods, "
            f"float32{mode}; {device}: {hardware(device)}; torch {torch.__version__}; median of {a['repeats']} calls; "
            f"load average at start {load:.2f}")
    out = logs.get("")
    out.info(head)
    rows, profile = [], ""
    for size in sizes:
        calls = {}
        for kind, hidden in heads.items():
            problem, policy, batch, start, width, warmup = setup(size, a["horizon"], a["lead_time"], kind,
                                                                hidden, device)
            calls |= {(kind, name): call
                      for name, call in step_calls(problem, policy, batch, start, a["horizon"], width, warmup).items()}
            if a["compile"]:  # the same weights compiled, timed interleaved with the eager calls
                cproblem, cpolicy = get_problem("lost_sales"), copy.deepcopy(policy)
                cpolicy.period = torch.compile(cpolicy.period, dynamic=False, mode=a["compile_mode"])
                cproblem.step = torch.compile(cproblem.step, dynamic=False, mode=a["compile_mode"])
                compiled = step_calls(cproblem, cpolicy, batch, start, a["horizon"], width, warmup)
                tic = time.perf_counter()
                for call in compiled.values():
                    call()
                sync()
                out.info(f"  {kind} batch {size}: first compiled calls (compilation included) took "
                         f"{time.perf_counter() - tic:.1f} s")
                calls |= {(kind, f"{name}, compiled"): call for name, call in compiled.items()}
        for n in threads:
            torch.set_num_threads(n)
            for (kind, name), m in time_calls(calls, a["repeats"], sync).items():
                rate = size * a["horizon"] / m
                rows.append((kind, size, n, name, 1000 * m, rate))
                out.info(f"  {kind:4s} batch={size:<8d} threads={n}  {name:27s} {1000 * m:9.1f} ms  "
                         f"{rate / 1e6:8.2f} M product-periods/s")
        if a["profile"] and size == max(sizes):
            kind = next(iter(heads))
            torch.set_num_threads(threads[0])
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.startswith("cuda"):
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
                calls[(kind, "forward+backward")]()
                sync()
            sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
            profile = (kind, size, prof.key_averages(group_by_input_shape=True).table(sort_by=sort,
                                                                                    row_limit=a["rows"]))
            out.info(profile[2])
    if a["docs"]:
        key, tag = f"perf:step_{device.split(':')[0]}", device.split(":")[0]
        write_block(DOC, key, report(a, head, rows, profile, threads))
        frame = pd.DataFrame(rows, columns=["kind", "batch", "threads", "call", "ms", "product_periods_per_s"])
        frame["date"] = time.strftime("%Y-%m-%d %H:%M")
        frame["load_at_start"] = load
        frame["device"] = hardware(device)
        RESULTS.mkdir(parents=True, exist_ok=True)
        frame.to_csv(RESULTS / f"step_speed_{tag}.csv", index=False)
        if RESULTS == DEFAULT_RESULTS:
            record_run(f"step_speed_{tag}", "python -m benchmarks.step_speed " + " ".join(argv), load)
        out.info(f"wrote the block {key} of {DOC} and {RESULTS / f'step_speed_{tag}.csv'}")


def report(a: dict, head: str, rows: list, profile, threads: list[int]) -> str:
    args = " ".join(f"{k}={str(a[k]).lower() if isinstance(a[k], bool) else a[k]}"
                    for k in DEFAULTS if a[k] != DEFAULTS[k] and k != "docs")
    lines = [f"### DirectBackprop step on {a['device']}", "",
             f"`python -m benchmarks.step_speed {args} docs=true`, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. {head}.", "",
             markdown_table(pd.DataFrame(rows, columns=["policy", "batch", "threads", "call", "ms per call",
                                                        "product-periods/s"]),
                            {"batch": ",", "ms per call": ".1f", "product-periods/s": ",.0f"})]
    if profile:
        kind, size, table = profile
        lines += ["", f"torch.profiler, one forward+backward call of the {kind} policy at batch {size:,} on "
                  f"{threads[0]} thread(s): the top {a['rows']} ops by self time.", "", "```"]
        lines += [line.rstrip() for line in table.strip().splitlines()] + ["```"]
    return "\n".join(lines)


if __name__ == "__main__":
    run_script(main)
