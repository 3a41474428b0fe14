"""The Ray session every job uses: connect to a cluster or start Ray in-process, with the
environment defaults and log levels a local Ray needs."""
from __future__ import annotations

import os
import types

import ray

from pipeline.config import Config


def quiet_ray_logs() -> None:
    """Ray Data and Ray Train log every execution plan at INFO; keep warnings. Without a
    dashboard (our local Ray) the state API is absent and Ray Train's placement-group
    cleaner warns about it every second: silence that one logger. Self-contained, so
    Ray can ship it by value as the workers' setup hook."""
    import logging

    import ray.train.v2._internal.execution.context as train_context

    # Ray Train names the logger of its context after its file: "Reporting training result ..." each epoch
    for name in ("ray.data", "ray.train", "ray.tune", train_context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def local_cpus(cfg: Config, runs: int = 1) -> int:
    """Logical CPUs for a local Ray: the workers of ``runs`` concurrent training runs plus
    one spare each (Ray Data's read tasks and the run's driver; without it ingest hangs),
    plus one; at least one per core."""
    return max(os.cpu_count() or 1, runs * (max(1, cfg.train.num_workers) * cfg.train.cpus_per_worker + 1) + 1)


def init_ray(cfg: Config, num_cpus: int | None = None) -> None:
    """Connect to the configured cluster (or $RAY_ADDRESS), else start Ray in-process with
    ``ray.num_cpus`` logical CPUs, or ``num_cpus`` (a job's own need) when that is unset,
    or enough for one training run (``local_cpus``)."""
    quiet_ray_logs()
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    logs = ray.LoggingConfig(log_level="WARNING")
    if address:
        ray.init(address=address, logging_config=logs)
    else:
        # a copy of quiet_ray_logs that cloudpickle ships by value (workers need not import us)
        hook = types.FunctionType(quiet_ray_logs.__code__, {"__builtins__": __builtins__}, quiet_ray_logs.__name__)
        ray.init(num_cpus=cfg.ray.num_cpus or num_cpus or local_cpus(cfg), include_dashboard=False,
                 logging_config=logs, runtime_env={"worker_process_setup_hook": hook})
