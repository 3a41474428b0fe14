"""Batch inference: next period's order for every product, from its latest history and
state, with the model version that computed it.

``next_actions`` is the whole computation (pure torch). ``Recommender`` is what Ray Data's
``map_batches`` runs on the workers: it loads the policy once per actor, computes a batch
and writes it as one Parquet file into the output folder, returning only its row count, so
that the driver can show progress while the workers write. ``recommend`` drives it.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from torch import Tensor

from pipeline.core.batch import ProductBatch, batch_from_columns
from pipeline.errors import DataError
from pipeline.reporting.progress import eta
from pipeline.core.rollout import action_matrix, rollout
from pipeline.adapters import checkpoint as ckpt
from pipeline.core.problems import get_problem

STATES = ("columns", "simulate")


@torch.no_grad()
def next_actions(problem, policy, batch: ProductBatch, width: int, state: Tensor, round_actions: bool) -> Tensor:
    """[B, A]: the actions for period ``batch.periods`` (the one after the history) in
    ``state`` [B, width]."""
    ctx = policy.prepare(batch, batch.periods, 1)
    action = action_matrix(policy.act(ctx, 0, state))
    return torch.round(action) if round_actions else action


@torch.no_grad()
def simulated_state(problem, policy, batch: ProductBatch, width: int, round_actions: bool) -> Tensor:
    """[B, width]: the state each product ends its history in when the policy runs it from
    an empty system at the first period its window allows."""
    start = max(policy.window, 1)
    traj = rollout(problem, policy, batch, start, batch.periods - start, width, round_actions=round_actions,
                   record_states=True)
    setup = problem.setup(batch, width)
    last = problem.step(traj.states[:, -1], traj.actions[:, -1], batch.demand[:, -1], batch, setup)
    return last.next_state


def state_from_columns(cols: dict, names: list[str], source: str) -> Tensor:
    missing = [n for n in names if n not in cols]
    if missing:
        raise DataError(f"{source}: no state column {', '.join(missing)} (the state is "
                        f"{', '.join(names)}); add them, or set recommend.state=simulate")
    state = np.stack([np.asarray(cols[n], dtype=np.float64) for n in names], axis=1)
    bad = ~np.isfinite(state) | (state < 0)
    if bad.any():
        column = names[int(np.argmax(bad.any(axis=0)))]
        raise DataError(f"{source}: {int(bad.any(axis=1).sum())} rows with a negative or non-finite state "
                        f"(first in column {column})")
    return torch.as_tensor(state, dtype=torch.float32)


class Recommender:
    """A Ray Data ``map_batches`` callable (one per actor): the policy of ``checkpoint``,
    loaded once; each call writes its batch's recommendations to ``output`` as one Parquet
    file and returns ``{"rows": [n]}``."""

    def __init__(self, checkpoint: str, model_version: str, output: str, state: str, round_actions: bool,
                 source: str):
        torch.set_num_threads(1)
        self.policy, cfg, saved = ckpt.load_policy(Path(checkpoint))
        self.problem = get_problem(cfg.problem.name, cfg.problem.params)
        self.width = saved["state_width"]
        self.names = self.problem.state_names(self.width)
        self.version, self.output, self.state, self.source = model_version, Path(output), state, source
        self.round = round_actions and self.problem.discrete

    def __call__(self, cols: dict) -> dict:
        batch = batch_from_columns(cols)
        if batch.periods <= self.policy.window:
            raise DataError(f"{self.source}: histories of {batch.periods} periods; the policy needs more than "
                            f"its {self.policy.window}-period window")
        longest = int(batch.lead_time.max())
        if self.problem.state_width(longest) > self.width:
            raise DataError(f"{self.source}: lead times up to {longest}; the policy was trained with a "
                            f"{self.width}-entry state ({', '.join(self.names)})")
        if self.state == "columns":
            state = state_from_columns(cols, self.names, self.source)
        else:
            state = simulated_state(self.problem, self.policy, batch, self.width, self.round)
        actions = next_actions(self.problem, self.policy, batch, self.width, state, self.round)
        table = {"product_id": pa.array(batch.product_id), "period": pa.array(np.full(batch.size, batch.periods)),
                 "lead_time": pa.array(batch.lead_time.numpy()),
                 **{n: pa.array(state[:, i].numpy()) for i, n in enumerate(self.names)},
                 **{a: pa.array(actions[:, i].numpy()) for i, a in enumerate(self.problem.actions)},
                 "state_source": pa.array([self.state] * batch.size),
                 "model_version": pa.array([self.version] * batch.size)}
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / f"part-{uuid.uuid4().hex}.parquet"
        pq.write_table(pa.table(table), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        return {"rows": np.array([batch.size])}


def recommend(source: Path, output: Path, checkpoint: Path, model_version: str, state: str,
              round_actions: bool, batch_size: int, concurrency: int, total: int, progress=print) -> int:
    """Run ``Recommender`` over the Parquet ``source`` with Ray Data (``concurrency`` actors),
    printing products done, the rate and the time left; returns the products written."""
    counts = ray.data.read_parquet(str(source)).map_batches(
        Recommender, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=concurrency),
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "model_version": model_version, "output": str(output),
                               "state": state, "round_actions": round_actions, "source": str(source)})
    done, started, shown = 0, time.time(), 0.0
    for part in counts.iter_batches(batch_size=None, batch_format="numpy"):
        done += int(part["rows"].sum())
        if time.time() - shown >= 2 or done >= total:
            progress(f"[recommend] {done:,}/{total:,} products  ({eta(done, total, started, 'products')})")
            shown = time.time()
    return done
