"""The DirectBackprop training step, the training epoch and per-epoch validation, pure torch.

What a step depends on is gathered once per run in a ``TrainSpec`` (``TrainSpec.from_config``).
``train_epoch`` loops over batches of products and time windows; the Ray Train worker
(``pipeline.adapters.ray_train``) and single-process loops (``benchmarks/time_to_quality.py``)
both call it. Nothing here knows about Ray or MLflow.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from pipeline.core.batch import ProductBatch
from pipeline.core.evaluation import policy_metrics, violation_summary
from pipeline.core.penalty import ShockProbes, penalty_properties, structure_penalty
from pipeline.core.rollout import directbackprop_loss, period_loss, rollout
from pipeline.core.protocols import Problem

PENALTY_KEYS = ("penalty", "violation_rate_in", "violation_rate_out", "violation_rate_shock")  # train_step's, with the penalty on


def cosine_lr(base: float, final_fraction: float, progress: float) -> float:
    """Cosine decay from ``base`` to ``base * final_fraction`` as progress goes 0 -> 1."""
    progress = min(max(progress, 0.0), 1.0)
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_start(generator: torch.Generator, history: int, horizon: int, periods: int) -> int:
    """A random rollout start with at least ``history`` periods before it."""
    return int(torch.randint(history, periods - horizon + 1, (1,), generator=generator))


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training step and epoch depend on besides the policy, the optimiser and
    the data, gathered once per run (``from_config``) rather than on every step.

    ``penalty``: the structure-penalty properties, or None when every weight is 0;
    ``weights``: their weights [P] (float64)."""
    width: int                 # state entries the policy sees
    horizon: int               # periods of a rollout
    warmup: int                # its first periods, not in the loss
    discount: float
    objective: str             # "cost" or "reward"
    grad_clip: float           # 0: no clipping
    round_actions: bool        # whole-unit actions in the rollout (gradient straight through)
    stock_at_cost: bool        # reward objective: stock valued at unit cost (``rollout.period_reward``)
    history: int               # periods before a rollout start (the policy's input window)
    windows_per_batch: int     # steps on each batch of products, each on a new time window
    lr: float                  # the learning rate at the start
    lr_final_fraction: float   # ... and its share at the last epoch (cosine decay)
    epochs: int
    ramp_epochs: float         # the penalty weights grow linearly over these epochs
    state_names: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    penalty: Optional[list] = None
    weights: Optional[torch.Tensor] = None
    probe_share: float = 0.0
    probe_widen: float = 1.0
    shocks: ShockProbes = ShockProbes()
    discrete: bool = False     # the problem's: shocked demand is rounded to whole units

    @classmethod
    def from_config(cls, cfg, problem: Problem, width: int) -> "TrainSpec":
        """From a run's config (its ``train``, ``problem`` and ``penalty`` groups)."""
        t, p = cfg.train, cfg.penalty
        weights = torch.tensor(p.weights, dtype=torch.float64)
        props = None
        if bool((weights > 0).any()):
            props = penalty_properties(problem, width, list(p.properties))
            weights = weights.expand(len(props)).clone()
        return cls(width=width, horizon=t.horizon, warmup=t.warmup, discount=cfg.problem.discount,
                   objective=cfg.problem.objective, grad_clip=t.grad_clip,
                   round_actions=t.round_actions and problem.discrete, stock_at_cost=t.stock_at_cost,
                   history=t.history, windows_per_batch=t.windows_per_batch, lr=t.lr,
                   lr_final_fraction=t.lr_final_fraction,
                   epochs=t.epochs, ramp_epochs=p.ramp_epochs, state_names=tuple(problem.state_names(width)),
                   actions=tuple(problem.actions), penalty=props, weights=weights if props else None,
                   probe_share=p.probe_share, probe_widen=p.probe_widen,
                   shocks=ShockProbes(p.shock_share, tuple(p.shock_factors), p.shock_max_lag),
                   discrete=problem.discrete)


def train_step(policy: nn.Module, optimizer: torch.optim.Optimizer, problem: Problem, batch: ProductBatch,
               start: int, spec: TrainSpec,
               grad_sync: Optional[Callable[[list[torch.Tensor]], None]] = None,
               penalty_scale: float = 1.0) -> dict[str, float]:
    """One DirectBackprop step: roll out ``spec.horizon`` periods from ``start``, average
    the (discounted) per-period loss after the warm-up, add the structure penalty when
    ``spec`` has one (its weights times ``penalty_scale``, see ``penalty_ramp``),
    backpropagate through the whole trajectory, average gradients across workers, clip, step."""
    traj = rollout(problem, policy, batch, start, spec.horizon, spec.width, round_actions=spec.round_actions,
                   record_states=spec.penalty is not None)
    loss = directbackprop_loss(period_loss(traj, batch, spec.objective, spec.stock_at_cost), spec.warmup,
                               spec.discount)
    total, extra = loss, {}
    if spec.penalty is not None:
        pen, extra = structure_penalty(policy, traj, spec.penalty, penalty_scale * spec.weights.to(loss),
                                       list(spec.state_names), list(spec.actions),
                                       spec.probe_share, spec.probe_widen, shocks=spec.shocks,
                                       batch=batch, start=start, discrete=spec.discrete)
        total = loss + pen
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = [p for p in policy.parameters() if p.grad is not None]
    if grad_sync is not None:
        grad_sync([p.grad for p in params])
    if spec.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
    else:
        norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params))
    if not torch.isfinite(total) or not torch.isfinite(norm):
        raise FloatingPointError(f"non-finite loss {total.item()} or gradient norm {norm.item()} "
                                 f"at rollout start {start}")
    optimizer.step()
    return {"loss": loss.item(), "grad_norm": norm.item(), **extra}  # loss: the DirectBackprop objective


class StepFault(FloatingPointError):
    """A step of ``train_epoch`` met a non-finite loss or gradient norm (no weight was
    changed by it); ``step``: its index in the epoch, from 0."""

    def __init__(self, step: int, error: FloatingPointError):
        super().__init__(str(error))
        self.step = step


@dataclass
class EpochStats:
    """What ``train_epoch`` measured: the steps taken, their losses (and penalty terms),
    the last learning rate, and the seconds spent on the batches (not waiting for them)."""
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    penalty: dict[str, list[float]] = field(default_factory=dict)
    lr: float = 0.0
    compute_seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """``train/...`` metrics of the epoch (NaN loss and lr 0 when it took no step)."""
        return {"train/loss": float(np.mean(self.losses)) if self.losses else math.nan,
                "train/lr": self.lr if self.losses else 0.0,
                "train/compute_seconds": self.compute_seconds, "train/steps": self.steps,
                **{f"train/{k}": float(np.mean(v)) for k, v in self.penalty.items()}}


def train_epoch(policy: nn.Module, optimizer: torch.optim.Optimizer, problem: Problem, batches: Iterable[Any],
                spec: TrainSpec, generator: torch.Generator, progress: Callable[[int], float],
                grad_sync: Optional[Callable[[list[torch.Tensor]], None]] = None,
                prepare: Callable[[Any], ProductBatch] = lambda b: b) -> EpochStats:
    """``spec.windows_per_batch`` steps on each of ``batches`` (``prepare`` turns one into a
    ``ProductBatch`` on the policy's device), each on a new time window drawn from
    ``generator``. ``progress(k)``: the epochs done (fractional) at this call's k-th step,
    which sets the learning rate (``cosine_lr`` over ``spec.epochs``) and the share of the
    penalty weights (``penalty_ramp``). Raises ``StepFault`` on a non-finite step."""
    stats = EpochStats()
    for item in batches:
        tic = time.time()
        batch = prepare(item)
        for _ in range(spec.windows_per_batch):  # each step: these products, a fresh time window
            done = progress(stats.steps)
            stats.lr = cosine_lr(spec.lr, spec.lr_final_fraction, done / spec.epochs)
            for group in optimizer.param_groups:
                group["lr"] = stats.lr
            start = sample_start(generator, spec.history, spec.horizon, batch.periods)
            try:
                out = train_step(policy, optimizer, problem, batch, start, spec, grad_sync,
                                 penalty_ramp(spec.ramp_epochs, done))
            except FloatingPointError as e:  # every worker sees it: the gradients are averaged first
                raise StepFault(stats.steps, e) from e
            stats.losses.append(out["loss"])
            for key in PENALTY_KEYS:
                if key in out:
                    stats.penalty.setdefault(key, []).append(out[key])
            stats.steps += 1
        stats.compute_seconds += time.time() - tic
    return stats


def penalty_ramp(ramp_epochs: float, epochs_done: float) -> float:
    """The share of the penalty weights in force after ``epochs_done`` (fractional) epochs."""
    return 1.0 if ramp_epochs <= 0 else min(1.0, epochs_done / ramp_epochs)


def gradient_averager(world_size: int) -> Optional[Callable[[list[torch.Tensor]], None]]:
    """Averages gradients over the workers of a ``torch.distributed`` group in one
    all-reduce (every gradient, the structure penalty's included); None for one worker."""
    if world_size <= 1:
        return None
    import torch.distributed as dist

    def sync(grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    return sync


def validation_metrics(policy: nn.Module, problem: Problem, batch: ProductBatch, cfg, width: int) -> dict[str, float]:
    """Metrics on the validation products over the evaluation window (orders as trained:
    continuous, or whole units with ``train.round_actions``), and the violations of the structural properties (penalised or not) in the
    visited and in probe states, prefixed ``valid/``."""
    e = cfg.eval
    horizon = batch.periods - e.start
    m = policy_metrics(problem, policy, batch, e.start, horizon, e.warmup, width,
                       round_actions=cfg.train.round_actions and problem.discrete)
    m.update(violation_summary(cfg, policy, problem, batch, width))
    return {f"valid/{k}": v for k, v in m.items()}
