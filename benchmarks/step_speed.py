"""Speed of the DirectBackprop core: product-periods per second through rollout and loss.

    python -m benchmarks.step_speed [threads=1,2] [repeats=10] [batch=8192] [horizon=50]
        [lead_time=4] [kind=mlp] [hidden=32,32,32] [compile=false] [profile=false] [rows=25]

Headline config (issue 6 item 2): lost sales with lead time 4, the MLP policy with hidden
[32, 32, 32] and ELU, 8192 products x 50 periods, float32. Three measurements, each the
median of ``repeats`` calls after two warm-up calls, interleaved call by call (so that a
slow spell of the machine falls on all of them alike), at each thread count of ``threads``:

- ``forward+backward``: ``rollout`` + ``period_loss`` + ``directbackprop_loss`` and
  ``loss.backward()`` (a training step without the optimiser);
- ``forward``: the same without the backward (the autograd graph is still recorded);
- ``no_grad``: the rollout and loss under ``torch.no_grad`` (evaluation, simulation).

``compile=true`` runs ``policy.period`` (the network's per-period work) and
``problem.step`` (the simulator's) through ``torch.compile`` first and reports how long the
first call took (compilation included). Optional and not used by training: a compiled
period has no double backward (the structure penalty needs one) and recompiles for every
new batch shape.

``profile=true`` also prints torch.profiler's top ``rows`` ops (by self CPU time, grouped
by input shape) of one forward+backward call at the first thread count.
"""
from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

from pipeline.config import load_config
from pipeline.data import batch_from_columns, synthetic_population
from pipeline.policy import OrderPolicy
from pipeline.problems import get_problem
from pipeline.rollout import directbackprop_loss, period_loss, rollout

DEFAULTS = {"threads": "1,2", "repeats": "10", "batch": "8192", "horizon": "50", "lead_time": "4",
            "kind": "mlp", "hidden": "32,32,32", "compile": "false", "profile": "false", "rows": "25"}


def parse(argv: list[str]) -> dict[str, str]:
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise SystemExit(f"expected key=value with key in {', '.join(DEFAULTS)}; got {arg!r}")
        args[key] = value
    return args


def setup(batch_size: int, horizon: int, lead_time: int, kind: str, hidden: tuple[int, ...]):
    """(problem, policy, batch, start, width) of the benchmark config."""
    cfg = load_config([f"data.num_products={batch_size}", f"data.lead_time_range=[{lead_time},{lead_time}]",
                       f"train.horizon={horizon}", f"policy.kind={kind}"])
    problem = get_problem("lost_sales")
    width = problem.state_width(lead_time)
    batch = batch_from_columns(synthetic_population(cfg.data, cfg.seed))
    torch.manual_seed(0)
    policy = OrderPolicy(width, kind=kind, hidden=hidden)
    return problem, policy, batch, cfg.train.history, width, cfg.train.warmup


def main(argv: list[str]) -> None:
    a = parse(argv)
    threads = [int(t) for t in a["threads"].split(",")]
    batch_size, horizon, lead_time = int(a["batch"]), int(a["horizon"]), int(a["lead_time"])
    hidden = tuple(int(h) for h in a["hidden"].split(","))
    problem, policy, batch, start, width, warmup = setup(batch_size, horizon, lead_time, a["kind"], hidden)
    if a["compile"] == "true":
        policy.period = torch.compile(policy.period, dynamic=False)
        problem.step = torch.compile(problem.step, dynamic=False)

    def forward():
        traj = rollout(problem, policy, batch, start, horizon, width)
        return directbackprop_loss(period_loss(traj, batch, "cost"), warmup, 1.0)

    def forward_backward():
        policy.zero_grad(set_to_none=True)
        forward().backward()

    def no_grad():
        with torch.no_grad():
            forward()

    calls = {"forward+backward": forward_backward, "forward": forward, "no_grad": no_grad}
    compiled = ", compiled" if a["compile"] == "true" else ""
    print(f"lost sales L={lead_time}, {a['kind']} policy hidden {list(hidden)}, {batch_size} products x "
          f"{horizon} periods, float32{compiled}; torch {torch.__version__}, {platform.machine()}, "
          f"median of {a['repeats']} calls")
    if a["compile"] == "true":
        tic = time.perf_counter()
        for call in calls.values():
            call()
        print(f"compiled (policy.period and problem.step): first calls took {time.perf_counter() - tic:.1f} s")
    for n in threads:
        torch.set_num_threads(n)
        times = {name: [] for name in calls}
        for i in range(int(a["repeats"]) + 2):
            for name, call in calls.items():
                tic = time.perf_counter()
                call()
                if i >= 2:
                    times[name].append(time.perf_counter() - tic)
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"  threads={n}  {name:17s} {1000 * m:8.1f} ms  {batch_size * horizon / m / 1e6:6.2f} M product-periods/s")
    if a["profile"] == "true":
        torch.set_num_threads(threads[0])
        with torch.profiler.profile(record_shapes=True) as prof:
            forward_backward()
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                 row_limit=int(a["rows"])))


if __name__ == "__main__":
    main(sys.argv[1:])
