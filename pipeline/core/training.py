"""The DirectBackprop training step and per-epoch validation, pure torch.

The Ray adapter calls these from each worker; nothing here knows about Ray or MLflow.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from pipeline.core.penalty import penalty_properties
from pipeline.core.batch import ProductBatch
from pipeline.core.evaluation import policy_metrics, violation_summary
from pipeline.core.penalty import structure_penalty
from pipeline.core.rollout import directbackprop_loss, period_loss, rollout


def cosine_lr(base: float, final_fraction: float, progress: float) -> float:
    """Cosine decay from ``base`` to ``base * final_fraction`` as progress goes 0 -> 1."""
    progress = min(max(progress, 0.0), 1.0)
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_start(generator: torch.Generator, history: int, horizon: int, periods: int) -> int:
    """A random rollout start with at least ``history`` periods before it."""
    return int(torch.randint(history, periods - horizon + 1, (1,), generator=generator))


def train_step(policy: nn.Module, optimizer: torch.optim.Optimizer, problem, batch: ProductBatch,
               start: int, cfg, width: int,
               grad_sync: Optional[Callable[[list[torch.Tensor]], None]] = None,
               penalty_scale: float = 1.0) -> dict[str, float]:
    """One DirectBackprop step: roll out ``cfg.train.horizon`` periods from ``start``,
    average the (discounted) per-period loss after the warm-up, add the structure penalty
    when ``cfg.penalty`` weights it (times ``penalty_scale``, see ``penalty_ramp``),
    backpropagate through the whole trajectory, average gradients across workers, clip, step."""
    t = cfg.train
    spec = penalty_spec(cfg, problem, width)
    traj = rollout(problem, policy, batch, start, t.horizon, width, record_states=spec is not None)
    loss = directbackprop_loss(period_loss(traj, batch, cfg.problem.objective), t.warmup,
                               cfg.problem.discount)
    total, extra = loss, {}
    if spec is not None:
        props, weights = spec
        pen, extra = structure_penalty(policy, traj, props, penalty_scale * weights.to(loss),
                                       problem.state_names(width), list(problem.actions),
                                       cfg.penalty.probe_share, cfg.penalty.probe_widen)
        total = loss + pen
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = [p for p in policy.parameters() if p.grad is not None]
    if grad_sync is not None:
        grad_sync([p.grad for p in params])
    if t.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
    else:
        norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params))
    if not torch.isfinite(total) or not torch.isfinite(norm):
        raise FloatingPointError(f"non-finite loss {total.item()} or gradient norm {norm.item()} "
                                 f"at rollout start {start}")
    optimizer.step()
    return {"loss": loss.item(), "grad_norm": norm.item(), **extra}  # loss: the DirectBackprop objective


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


def penalty_spec(cfg, problem, width: int):
    """(properties, weights [P]) of the structure penalty, or None when every weight is 0."""
    weights = torch.tensor(cfg.penalty.weights, dtype=torch.float64)
    if not bool((weights > 0).any()):
        return None
    props = penalty_properties(problem, width, list(cfg.penalty.properties))
    return props, weights.expand(len(props)).clone()


def validation_metrics(policy: nn.Module, problem, batch: ProductBatch, cfg, width: int) -> dict[str, float]:
    """Metrics on the validation products over the evaluation window (continuous orders,
    as trained), and the violations of the structural properties (penalised or not) in the
    visited and in probe states, prefixed ``valid/``."""
    e = cfg.eval
    horizon = batch.periods - e.start
    m = policy_metrics(problem, policy, batch, e.start, horizon, e.warmup, width, round_actions=False)
    m.update(violation_summary(cfg, policy, problem, batch, width))
    return {f"valid/{k}": v for k, v in m.items()}
