"""Ray adapter: Ray Data feeds product histories to a Ray Train ``TorchTrainer``.

Every worker runs ``train_loop_per_worker``: it streams its shard of the training
products, takes DirectBackprop steps (``pipeline.engine``), averages gradients with the
other workers, and reports each epoch. Rank 0 validates, logs the epoch to MLflow and
writes the checkpoint. A job started again with the same run name resumes from the latest
checkpoint, from Ray (after a worker-group restart) or from the run's checkpoint folder.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.adapters import checkpoint as ckpt
from pipeline.config import Config, from_yaml, to_yaml
from pipeline.core.batch import ProductBatch, batch_from_columns, concat_batches
from pipeline.data.parquet import count_rows
from pipeline.core.training import (
    cosine_lr,
    gradient_averager,
    penalty_ramp,
    sample_start,
    train_step,
    validation_metrics,
)
from pipeline.errors import FAULT_FILE, NumericalFault

from pipeline.core.policy import build_policy
from pipeline.core.problems import get_problem
from pipeline.reporting.progress import eta
from pipeline.adapters.ray_session import quiet_ray_logs
from pipeline.adapters.tracking import EpochLogger

UNSENT_FILE = "unsent_metrics.json"  # in the run folder: epochs' metrics not yet taken by the tracking server


def collect(shard, batch_size: int = 4096) -> ProductBatch | None:
    """Read a whole (small) dataset shard into one batch."""
    parts = [batch_from_columns(b) for b in shard.iter_batches(batch_size=batch_size,
                                                                 batch_format="numpy")]
    if not parts:
        return None
    return concat_batches(parts)



PENALTY_KEYS = ("penalty", "violation_rate_in", "violation_rate_out")  # train_step's, with the penalty on


def train_loop_per_worker(payload: dict) -> None:
    cfg = from_yaml(payload["config"])
    quiet_ray_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.train.use_gpu else torch.device("cpu")
    torch.set_num_threads(max(1, cfg.train.cpus_per_worker))
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = payload["state_width"]

    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    policy = build_policy(cfg.policy, width, len(problem.actions)).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    run_dir = Path(payload["run_dir"])
    first_epoch, best = 0, math.inf
    resume = ray.train.get_checkpoint()
    latest = run_dir / "checkpoints" / "latest" / ckpt.FILE
    state = None
    if resume is not None:  # a restarted worker group, or a run started again under its name
        with resume.as_directory() as d:
            state = ckpt.load(Path(d) / ckpt.FILE)
    if latest.exists():  # written before each report: newer when a failure came in between
        own = ckpt.load(latest)
        if state is None or own["epoch"] > state["epoch"]:
            state, resume = own, None
    if state is not None:
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = state["epoch"] + 1
        best = state["metrics"].get("best_valid", math.inf)
    log = EpochLogger(payload["tracking_uri"], payload["run_id"], run_dir / UNSENT_FILE) if rank == 0 else None
    workers = run_dir / "workers"  # which process is which rank (py-spy dump --pid ..., the failure tests)
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"rank-{rank}.pid").write_text(str(os.getpid()))
    if state is not None and rank == 0:
        how = "the Ray Train checkpoint (a restart)" if resume is not None else f"{latest}"
        print(f"[train] resuming after epoch {state['epoch'] + 1} from {how}", flush=True)
        log({"train/resumed_after_epoch": state["epoch"] + 1}, step=first_epoch)  # the restarts, on the run

    generator = torch.Generator()
    train_shard = ray.train.get_dataset_shard("train")
    valid = collect(ray.train.get_dataset_shard("valid")) if rank == 0 else None
    if valid is not None:
        valid = valid.to(device)
    steps_per_epoch, batch_size = payload["steps_per_epoch"], payload["batch_size"]
    sync = gradient_averager(world)
    t = cfg.train
    started = time.time()
    for epoch in range(first_epoch, t.epochs):
        # the rollout windows of an epoch depend on (seed, epoch, rank) only: a run restarted
        # from a checkpoint samples what an uninterrupted run would have
        generator.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + rank)
        t0, step, losses, compute, penalty_log = time.time(), 0, [], 0.0, {}
        # full batches only: a small remainder batch would take as many steps as a full one
        for columns in train_shard.iter_batches(batch_size=batch_size, batch_format="numpy",
                                                local_shuffle_buffer_size=4 * batch_size,
                                                local_shuffle_seed=cfg.seed + epoch, drop_last=True):
            tic = time.time()
            batch = batch_from_columns(columns).to(device)
            for _ in range(t.windows_per_batch):  # each step: these products, a fresh time window
                lr = cosine_lr(t.lr, t.lr_final_fraction, (epoch + step / steps_per_epoch) / t.epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                start = sample_start(generator, t.history, t.horizon, batch.periods)
                try:
                    out = train_step(policy, optimizer, problem, batch, start, cfg, width, sync,
                                     penalty_ramp(cfg.penalty.ramp_epochs, epoch + step / steps_per_epoch))
                except FloatingPointError as e:  # every worker sees it: the gradients are averaged first
                    if rank == 0:
                        report_fault(run_dir, latest, epoch, step, e, t.grad_clip)
                    return  # no weights were changed by the bad step; the last checkpoint stays
                losses.append(out["loss"])
                for key in PENALTY_KEYS:
                    if key in out:
                        penalty_log.setdefault(key, []).append(out[key])
                step += 1
            compute += time.time() - tic
        metrics = {"train/loss": float(np.mean(losses)) if losses else math.nan, "train/lr": lr if losses else 0.0,
                   "train/epoch_seconds": time.time() - t0, "train/compute_seconds": compute,
                   "train/steps": step, "epoch": epoch,
                   **{f"train/{k}": float(np.mean(v)) for k, v in penalty_log.items()}}
        checkpoint = None
        if rank == 0:
            metrics.update(validation_metrics(policy, problem, valid, cfg, width))
            score = metrics["valid/avg_cost"] if cfg.problem.objective == "cost" else -metrics["valid/avg_reward"]
            best = min(best, score)
            metrics["valid/best"] = best
            # logged before the checkpoint: a failure in between redoes the epoch (logged again at
            # its step) rather than skipping its metrics
            log({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
            last_epoch = epoch == t.epochs - 1
            if (epoch + 1) % t.checkpoint_every == 0 or last_epoch or score <= best:
                info = {"best_valid": best, **metrics}
                if score <= best:
                    ckpt.save(run_dir / "checkpoints" / "best" / ckpt.FILE, policy, optimizer, epoch, cfg, width, info)
                path = ckpt.save(latest, policy, optimizer, epoch, cfg, width, info)
                checkpoint = ray.train.Checkpoint.from_directory(str(path.parent))
            print(f"[train] epoch {epoch + 1}/{t.epochs}  loss {metrics['train/loss']:.4f}  "
                  f"valid {cfg.problem.objective} {metrics[f'valid/avg_{cfg.problem.objective}']:.4f}  "
                  f"violations in {metrics['valid/in/violation_rate']:.1%} out {metrics['valid/out/violation_rate']:.1%}  "
                  f"{step * batch_size * t.horizon / max(compute, 1e-9):,.0f} product-periods/s  "
                  f"{metrics['train/epoch_seconds']:.1f}s  "
                  f"({eta(epoch + 1 - first_epoch, t.epochs - first_epoch, started)})", flush=True)
        ray.train.report(metrics, checkpoint=checkpoint)
    if state is not None and first_epoch >= t.epochs:
        # every epoch was done before a failure cut the run short of its last report: report
        # that epoch again (a Tune trial ends on it)
        ray.train.report({k: v for k, v in state["metrics"].items() if k != "best_valid"})
    if log is not None:  # a last try; what the tracking server still did not take stays in UNSENT_FILE
        log.close()


def report_fault(run_dir: Path, latest: Path, epoch: int, step: int, error: Exception, grad_clip: float) -> None:
    kept = (f"the last good checkpoint (epoch {ckpt.load(latest)['epoch'] + 1}) is kept at {latest}"
            if latest.exists() else "no epoch had finished, so there is no checkpoint")
    message = (f"training stopped at epoch {epoch + 1}, step {step + 1}: {error}; {kept}. "
               f"Lower train.lr or set train.grad_clip (now {grad_clip}), then run again with the same name "
               f"to resume from that checkpoint")
    (run_dir / FAULT_FILE).write_text(message)
    print(f"[train] {message}", flush=True)


def fit(cfg: Config, splits: dict[str, Path], run_dir: Path, tracking_uri: str, run_id: str,
        state_width: int, callbacks: list | None = None, storage_path: Path | None = None) -> list:
    """Build the TorchTrainer over Ray Data datasets and run it to the last epoch. Returns
    the epochs' metrics that rank 0 could not send to the tracking server (it was down at
    the end): ``[(metrics, step), ...]`` for ``Tracker.send_buffered``.

    ``callbacks``: extra Ray Train callbacks (a Tune trial passes ``TuneReportCallback``);
    ``storage_path``: Ray Train's storage folder, by default ``run_dir.parent / "ray"``."""
    storage = Path(storage_path or run_dir.parent / "ray")
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.print_on_execution_start = False  # once per epoch otherwise
    # Ray Data's default Parquet reader (DataSourceV2) lists every dataset execution, every
    # epoch, through a pool of up to 32 footer-reading actors, each a new process: seconds
    # of CPU per epoch for a few small files. The V1 reader reads the footers in place.
    data_ctx.use_datasource_v2 = False
    # blocks in file order: with one worker, a run (and a run restarted from a checkpoint)
    # sees the same batches; with several, Ray Data's split among them is dynamic
    data_ctx.execution_options.preserve_order = True
    datasets = {name: ray.data.read_parquet(str(splits[name])) for name in ("train", "valid")}
    t = cfg.train
    world = max(1, t.num_workers)
    per_worker = count_rows(splits["train"]) // world
    if per_worker < 1:
        raise ValueError(f"{splits['train']} has fewer training products than the {world} workers")
    batch_size = min(t.batch_size, per_worker)
    steps_per_epoch = (per_worker // batch_size) * t.windows_per_batch
    payload = {"config": to_yaml(cfg), "run_dir": str(run_dir), "tracking_uri": tracking_uri,
               "run_id": run_id, "state_width": state_width, "steps_per_epoch": steps_per_epoch,
               "batch_size": batch_size}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(name=cfg.name, storage_path=str(storage),
                             callbacks=list(callbacks or []),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    (run_dir / FAULT_FILE).unlink(missing_ok=True)  # UNSENT_FILE stays: rank 0 sends it first
    if (storage / cfg.name).exists() and not (run_dir / "checkpoints" / "latest" / ckpt.FILE).exists():
        # the run's own checkpoints were deleted: start afresh rather than restore Ray's copy of them
        print(f"[train] {run_dir} has no checkpoint; removing Ray Train's state of an earlier run at "
              f"{storage / cfg.name}", flush=True)
        shutil.rmtree(storage / cfg.name)
    trainer.fit()
    if (run_dir / FAULT_FILE).exists():
        raise NumericalFault((run_dir / FAULT_FILE).read_text())
    unsent = run_dir / UNSENT_FILE
    if not unsent.exists():
        return []
    pending = [(m, step) for m, step in json.loads(unsent.read_text())]
    unsent.unlink()
    return pending
