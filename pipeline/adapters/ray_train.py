"""Ray adapter: Ray Data feeds product histories to a Ray Train ``TorchTrainer`` whose workers run
``train_loop_per_worker``: restore, the core's ``train_epoch`` for each remaining epoch, ``end_epoch``
(docs/architecture.md, Training; faults and resumes: docs/reliability.md)."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.ray_session import quiet_ray_logs
from pipeline.adapters.tracking import EpochLogger, WorkerSystemMetrics
from pipeline.config import Config, from_yaml, to_yaml
from pipeline.core.batch import ProductBatch, batch_from_columns, concat_batches
from pipeline.core.policy import build_policy
from pipeline.core.problems import get_problem
from pipeline.core.training import (
    EpochStats,
    StepFault,
    TrainSpec,
    gradient_averager,
    train_epoch,
    validation_metrics,
)
from pipeline.data.parquet import count_rows, memory_size
from pipeline.errors import FAULT_FILE, NumericalFault
from pipeline.reporting import logs
from pipeline.reporting.progress import eta

UNSENT_FILE = "unsent_metrics.json"  # in the run folder: epochs' metrics not yet taken by the tracking server

log = logs.get("train")


@dataclass(frozen=True)
class WorkerArgs:
    """What the driver (``fit``) hands every worker, as Ray Train's loop config."""
    config: str            # the run's config, as YAML
    run_dir: str           # the run's folder: checkpoints, the spool of unsent metrics, faults
    tracking_uri: str
    run_id: str            # the MLflow run rank 0 logs the epochs to, and every worker its system metrics
    state_width: int
    steps_per_epoch: int   # of each worker: full batches of its shard x windows per batch
    batch_size: int


@dataclass
class Worker:
    """One worker's run, built once (``start_worker``): who it is, what it trains, and
    the things each epoch uses."""
    args: WorkerArgs
    cfg: Config
    rank: int
    world: int
    device: torch.device
    problem: object
    spec: TrainSpec
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    run_dir: Path
    latest: Path                  # the run's latest checkpoint
    tracking: EpochLogger | None  # rank 0 only


def train_loop_per_worker(config: dict) -> None:
    """Restore, train the remaining epochs, end each one (validate, log, checkpoint,
    report). A non-finite step stops every worker (rank 0 writes ``FAULT_FILE``). Every
    worker logs its system metrics to the run while it trains (``WorkerSystemMetrics``:
    ``system/rank_<k>/...``), stopped however the loop ends."""
    args = WorkerArgs(**config)
    system = WorkerSystemMetrics(args.tracking_uri, args.run_id, ray.train.get_context().get_world_rank()).start()
    try:
        train_worker(start_worker(args))
    finally:
        system.stop()


def train_worker(w: Worker) -> None:
    """One worker's training, from its checkpoint to the last epoch (``train_loop_per_worker``)."""
    state = restore(w)
    first_epoch = state["epoch"] + 1 if state is not None else 0
    best = state["metrics"].get("best_valid", math.inf) if state is not None else math.inf
    generator = torch.Generator()
    shard = ray.train.get_dataset_shard("train")
    valid = None
    if w.rank == 0:  # the whole (small) validation set, in one batch
        columns = ray.train.get_dataset_shard("valid").iter_batches(batch_size=4096, batch_format="numpy")
        parts = [batch_from_columns(b) for b in columns]
        valid = concat_batches(parts).to(w.device) if parts else None
    sync, seed, t = gradient_averager(w.world), w.cfg.seed, w.cfg.train
    started = time.time()
    for epoch in range(first_epoch, t.epochs):
        # the rollout windows of an epoch depend on (seed, epoch, rank) only: a run restarted
        # from a checkpoint samples what an uninterrupted run would have
        generator.manual_seed(seed * 1_000_003 + epoch * 1009 + w.rank)
        t0 = time.time()
        # full batches only: a small remainder batch would take as many steps as a full one
        batches = shard.iter_batches(batch_size=w.args.batch_size, batch_format="numpy",
                                     local_shuffle_buffer_size=4 * w.args.batch_size,
                                     local_shuffle_seed=seed + epoch, drop_last=True)
        try:
            stats = train_epoch(w.policy, w.optimizer, w.problem, batches, w.spec, generator,
                                progress=lambda step: epoch + step / w.args.steps_per_epoch, grad_sync=sync,
                                prepare=lambda columns: batch_from_columns(columns).to(w.device))
        except StepFault as e:  # every worker sees it: the gradients are averaged first
            if w.rank == 0:
                report_fault(w, epoch, e)
            return  # no weights were changed by the bad step; the last checkpoint stays
        best = end_epoch(w, epoch, stats, time.time() - t0, best, valid,
                         lambda: eta(epoch + 1 - first_epoch, t.epochs - first_epoch, started))
    if state is not None and first_epoch >= t.epochs:
        # every epoch was done before a failure cut the run short of its last report: report
        # that epoch again (a Tune trial ends on it)
        ray.train.report({k: v for k, v in state["metrics"].items() if k != "best_valid"})
    if w.tracking is not None:  # a last try; what the tracking server still did not take stays in UNSENT_FILE
        w.tracking.close()


def report_fault(w: Worker, epoch: int, error: StepFault) -> None:
    """Why training stopped and which checkpoint is kept, in ``FAULT_FILE`` (the driver raises it)."""
    kept = (f"the last good checkpoint (epoch {ckpt.load(w.latest)['epoch'] + 1}) is kept at {w.latest}"
            if w.latest.exists() else "no epoch had finished, so there is no checkpoint")
    message = (f"training stopped at epoch {epoch + 1}, step {error.step + 1}: {error}; {kept}. Lower train.lr "
               f"or set train.grad_clip (now {w.cfg.train.grad_clip}), then run again with the same name to "
               "resume from that checkpoint")
    (w.run_dir / FAULT_FILE).write_text(message)
    log.info(message)


def start_worker(args: WorkerArgs) -> Worker:
    """This worker's device, threads, problem, training spec, and the policy and optimiser
    from ``cfg.seed`` (identical initial weights on every worker); rank 0's epoch logger;
    its pid in ``<run_dir>/workers/rank-<k>.pid`` (which process is which rank: ``py-spy
    dump --pid ...``, the failure tests)."""
    cfg = from_yaml(args.config)
    quiet_ray_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.train.use_gpu else torch.device("cpu")
    torch.set_num_threads(max(1, cfg.train.cpus_per_worker))
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    policy = build_policy(cfg.policy, args.state_width, problem).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    run_dir = Path(args.run_dir)
    tracking = EpochLogger(args.tracking_uri, args.run_id, run_dir / UNSENT_FILE) if rank == 0 else None
    workers = run_dir / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"rank-{rank}.pid").write_text(str(os.getpid()))
    return Worker(args, cfg, rank, world, device, problem, TrainSpec.from_config(cfg, problem, args.state_width),
                  policy, optimizer, run_dir, ckpt.latest_path(run_dir), tracking)


def restore(w: Worker) -> dict | None:
    """Load the newest checkpoint into the policy and optimiser, and return it (None: a
    fresh run). Ray Train's checkpoint comes from a restarted worker group or a run started
    again under its name; the run's own latest one is written before each report, so it
    is newer when a failure came in between. Rank 0 says so and logs
    ``train/resumed_after_epoch`` (the restarts, on the run)."""
    resume, state = ray.train.get_checkpoint(), None
    if resume is not None:
        with resume.as_directory() as d:
            state = ckpt.load(Path(d) / ckpt.FILE)
    if w.latest.exists():
        own = ckpt.load(w.latest)
        if state is None or own["epoch"] > state["epoch"]:
            state, resume = own, None
    if state is None:
        return None
    w.policy.load_state_dict(state["policy"])
    w.optimizer.load_state_dict(state["optimizer"])
    if w.rank == 0:
        how = "the Ray Train checkpoint (a restart)" if resume is not None else f"{w.latest}"
        log.info(f"resuming after epoch {state['epoch'] + 1} from {how}")
        w.tracking({"train/resumed_after_epoch": state["epoch"] + 1}, step=state["epoch"] + 1)
    return state


def end_epoch(w: Worker, epoch: int, stats: EpochStats, seconds: float, best: float,
              valid: ProductBatch | None, time_left: Callable[[], str]) -> float:
    """The epoch's metrics; on rank 0 also the validation metrics, logged before the
    checkpoint (a failure in between redoes the epoch, logged again at its step, rather
    than skipping its metrics), the checkpoints (latest every ``train.checkpoint_every``
    epochs, at the last and at a new best; best at a new best) and the epoch's line. Every
    worker reports to Ray Train. Returns the best validation score so far.

    Times: ``train/epoch_seconds`` (streaming the shard and the steps), ``valid/seconds``
    (validation) and, logged after the checkpoints are written, ``train/checkpoint_seconds``."""
    cfg, t = w.cfg, w.cfg.train
    metrics = {**stats.metrics(), "train/epoch_seconds": seconds, "epoch": epoch}
    checkpoint = None
    if w.rank == 0:
        tic = time.time()
        metrics.update(validation_metrics(w.policy, w.problem, valid, cfg, w.spec.width))
        metrics["valid/seconds"] = time.time() - tic
        score = metrics["valid/avg_cost"] if cfg.problem.objective == "cost" else -metrics["valid/avg_reward"]
        best = min(best, score)
        metrics["valid/best"] = best
        w.tracking({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        keep = score <= best or t.keep == "last"  # the checkpoint the run keeps as its policy
        if (epoch + 1) % t.checkpoint_every == 0 or epoch == t.epochs - 1 or keep:
            tic, info = time.time(), {"best_valid": best, **metrics}
            if keep:
                ckpt.save(ckpt.best_path(w.run_dir), w.policy, w.optimizer, epoch, cfg, w.spec.width, info)
            path = ckpt.save(w.latest, w.policy, w.optimizer, epoch, cfg, w.spec.width, info)
            checkpoint = ray.train.Checkpoint.from_directory(str(path.parent))
            w.tracking({"train/checkpoint_seconds": time.time() - tic}, step=epoch)
        objective = cfg.problem.objective
        log.info(f"epoch {epoch + 1}/{t.epochs}  loss {metrics['train/loss']:.4f}  "
                 f"valid {objective} {metrics[f'valid/avg_{objective}']:.4f}  "
                 f"violations in {metrics['valid/in/violation_rate']:.1%} "
                 f"out {metrics['valid/out/violation_rate']:.1%}  "
                 f"{stats.steps * w.args.batch_size * t.horizon / max(stats.compute_seconds, 1e-9):,.0f} "
                 f"product-periods/s  {seconds:.1f}s  ({time_left()})")
    ray.train.report(metrics, checkpoint=checkpoint)
    return best


def cached(ds: ray.data.Dataset, path: Path, cache_mib: int) -> ray.data.Dataset:
    """``ds`` read once into Ray's object store (``materialize``) when ``path`` is at most
    ``cache_mib`` MiB in memory: every epoch after that starts from memory instead of
    reading and decoding the Parquet files again (docs/performance.md, The job end to end);
    else ``ds`` itself, streamed every epoch."""
    size = memory_size(path)
    if size > cache_mib * 2**20:
        return ds
    tic = time.time()
    ds = ds.materialize()
    log.info(f"{path}: {size / 2**20:,.0f} MiB read into Ray's object store in {time.time() - tic:.1f}s "
             f"(data.cache_mib={cache_mib})")
    return ds


def fit(cfg: Config, splits: dict[str, Path], run_dir: Path, tracking_uri: str, run_id: str,
        state_width: int, callbacks: list | None = None) -> list:
    """Build the TorchTrainer over Ray Data datasets and run it to the last epoch. Returns
    the epochs' metrics that rank 0 could not send to the tracking server (it was down at
    the end): ``[(metrics, step), ...]``.

    ``callbacks``: extra Ray Train callbacks (a Tune trial passes ``TuneReportCallback``).
    Ray Train's storage folder is ``run_dir.parent / "ray"``."""
    storage = run_dir.parent / "ray"
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.print_on_execution_start = False  # once per epoch otherwise
    # Ray Data's default Parquet reader (DataSourceV2) lists every dataset execution, every
    # epoch, through a pool of up to 32 footer-reading actors, each a new process: seconds
    # of CPU per epoch for a few small files. The V1 reader reads the footers in place.
    data_ctx.use_datasource_v2 = False
    # blocks in file order: with one worker, a run (and a run restarted from a checkpoint)
    # sees the same batches; with several, Ray Data's split among them is dynamic
    data_ctx.execution_options.preserve_order = True
    datasets = {name: cached(ray.data.read_parquet(str(splits[name])), splits[name], cfg.data.cache_mib)
                for name in ("train", "valid")}
    t = cfg.train
    world = max(1, t.num_workers)
    per_worker = count_rows(splits["train"]) // world
    if per_worker < 1:
        raise ValueError(f"{splits['train']} has fewer training products than the {world} workers")
    batch_size = min(t.batch_size, per_worker)
    steps_per_epoch = (per_worker // batch_size) * t.windows_per_batch
    args = WorkerArgs(config=to_yaml(cfg), run_dir=str(run_dir), tracking_uri=tracking_uri, run_id=run_id,
                      state_width=state_width, steps_per_epoch=steps_per_epoch, batch_size=batch_size)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(args),
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        datasets=datasets,
        # several workers split the training set; one reads it whole, without the split's
        # coordinator, whose start every epoch cost about a second (docs/performance.md)
        dataset_config=DataConfig(datasets_to_split=["train"] if world > 1 else []),
        run_config=RunConfig(name=cfg.name, storage_path=str(storage),
                             callbacks=list(callbacks or []),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    (run_dir / FAULT_FILE).unlink(missing_ok=True)  # UNSENT_FILE stays: rank 0 sends it first
    if (storage / cfg.name).exists() and not ckpt.latest_path(run_dir).exists():
        # the run's own checkpoints were deleted: start afresh rather than restore Ray's copy of them
        log.info(f"{run_dir} has no checkpoint; removing Ray Train's state of an earlier run at "
                 f"{storage / cfg.name}")
        shutil.rmtree(storage / cfg.name)
    trainer.fit()
    if (run_dir / FAULT_FILE).exists():
        raise NumericalFault((run_dir / FAULT_FILE).read_text())
    unsent = run_dir / UNSENT_FILE
    pending = [(m, step) for m, step in json.loads(unsent.read_text())] if unsent.exists() else []
    unsent.unlink(missing_ok=True)
    return pending
