"""Batch inference: next period's order for every product, from its latest history and
state, with the model version that computed it.

``next_actions`` is the whole computation (pure torch). ``Recommender`` is what Ray Data's
``map_batches`` runs on the workers: it loads the policy once per actor, computes a batch
and writes it as one Parquet file into the output folder, returning only its row count, so
that the driver can show progress while the workers write. ``recommend`` drives it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
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
from pipeline.data.parquet import data_version
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


def order_table(problem, policy, width: int, cols: dict, state: str, round_actions: bool, version: str,
                source: str) -> pa.Table:
    """The recommendations for the products of ``cols`` (a dict of numpy columns, one
    product per row): ``product_id, period, lead_time``, the state, the actions,
    ``state_source`` and ``model_version``. ``state``: ``columns`` (the data's state
    columns) or ``simulate``. What ``Recommender`` writes and the MLflow model returns."""
    batch = batch_from_columns(cols)
    if batch.periods <= policy.window:
        raise DataError(f"{source}: histories of {batch.periods} periods; the policy needs more than "
                        f"its {policy.window}-period window")
    names = problem.state_names(width)
    longest = int(batch.lead_time.max()) if batch.size else 0
    if problem.state_width(longest) > width:
        raise DataError(f"{source}: lead times up to {longest}; the policy was trained with a "
                        f"{width}-entry state ({', '.join(names)})")
    round_actions = round_actions and problem.discrete
    if state == "columns":
        current = state_from_columns(cols, names, source)
    else:
        current = simulated_state(problem, policy, batch, width, round_actions)
    actions = next_actions(problem, policy, batch, width, current, round_actions)
    return pa.table({"product_id": pa.array(batch.product_id),
                     "period": pa.array(np.full(batch.size, batch.periods)),
                     "lead_time": pa.array(batch.lead_time.numpy()),
                     **{n: pa.array(current[:, i].numpy()) for i, n in enumerate(names)},
                     **{a: pa.array(actions[:, i].numpy()) for i, a in enumerate(problem.actions)},
                     "state_source": pa.array([state] * batch.size),
                     "model_version": pa.array([version] * batch.size)})


def part_name(product_ids, version: str) -> str:
    """The file a batch's recommendations go to, from the model version and the batch's
    product ids: a batch Ray Data runs again (after an actor or node failure) replaces its
    own file instead of adding a second one."""
    digest = hashlib.sha256(version.encode())
    for pid in product_ids:
        digest.update(b"\0" + str(pid).encode())
    return f"part-{digest.hexdigest()[:20]}.parquet"


class Recommender:
    """A Ray Data ``map_batches`` callable (one per actor): the policy of ``checkpoint``,
    loaded once; each call writes its batch's recommendations (``order_table``) to
    ``output`` as one Parquet file named by ``part_name`` (written to a temporary name and
    renamed, so a file is whole or absent) and returns ``{"rows": [n]}``."""

    def __init__(self, checkpoint: str, model_version: str, output: str, state: str, round_actions: bool,
                 source: str):
        torch.set_num_threads(1)
        self.policy, cfg, saved = ckpt.load_policy(Path(checkpoint))
        self.problem = get_problem(cfg.problem.name, cfg.problem.params)
        self.width = saved["state_width"]
        self.version, self.output, self.state, self.source = model_version, Path(output), state, source
        self.round = round_actions

    def __call__(self, cols: dict) -> dict:
        table = order_table(self.problem, self.policy, self.width, cols, self.state, self.round, self.version,
                            self.source)
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / part_name(cols["product_id"], self.version)
        tmp = path.with_name(f".{path.stem}-{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return {"rows": np.array([table.num_rows])}


MANIFEST = "_manifest.json"  # a leading underscore: Parquet readers skip it


def recommend(source: Path, output: Path, checkpoint: Path, model_version: str, state: str,
              round_actions: bool, batch_size: int, concurrency: int, total: int, progress=print,
              recommender=Recommender) -> dict:
    """Run ``recommender`` over the Parquet ``source`` with Ray Data (``concurrency``
    actors), printing products done, the rate and the time left, into a staging folder
    beside ``output``; check that it holds one row per product (``check_output``), write
    its manifest, and only then put it in place of ``output``. A run that fails leaves the
    previous ``output`` as it was. Returns the manifest."""
    output = Path(output)
    staging = output.with_name(f".{output.name}.staging")
    if staging.exists():  # what a killed run left
        shutil.rmtree(staging)
    counts = ray.data.read_parquet(str(source)).map_batches(
        recommender, batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=concurrency),
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "model_version": model_version, "output": str(staging),
                               "state": state, "round_actions": round_actions, "source": str(source)})
    done, started, shown = 0, time.time(), 0.0
    for part in counts.iter_batches(batch_size=None, batch_format="numpy"):
        done += int(part["rows"].sum())  # a batch run again counts again: the check below counts rows
        if time.time() - shown >= 2 or done >= total:
            shown_done = min(done, total)
            progress(f"[recommend] {shown_done:,}/{total:,} products  ({eta(shown_done, total, started, 'products')})")
            shown = time.time()
    manifest = check_output(staging, total)
    manifest.update({"model_version": model_version, "input": str(source), "input_version": data_version(source),
                     "state_source": state, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    previous = output.with_name(f".{output.name}.previous")
    if output.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(output, previous)
    os.replace(staging, output)
    shutil.rmtree(previous, ignore_errors=True)
    return manifest


def check_output(folder: Path, products: int | None = None) -> dict:
    """The rows, products and files of a recommendations folder, checked: exactly one row
    per product and period, and (``products``) one per input product. A ``DataError``
    otherwise. With a manifest there, also that its files are there with its row counts
    (what a downstream job calls before it reads the orders)."""
    folder = Path(folder)
    files = sorted(folder.glob("part-*.parquet"))
    keys = pa.concat_tables([pq.read_table(f, columns=["product_id", "period"]) for f in files]) if files else None
    rows = keys.num_rows if keys is not None else 0
    unique = len(set(zip(keys["product_id"].to_pylist(), keys["period"].to_pylist()))) if rows else 0
    if unique != rows:
        raise DataError(f"{folder}: {rows - unique} duplicate (product_id, period) rows in {len(files)} files")
    if products is not None and unique != products:
        raise DataError(f"{folder}: {unique} products recommended, {products} in the input")
    listed = {f.name: pq.ParquetFile(f).metadata.num_rows for f in files}
    if (folder / MANIFEST).exists():
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["files"] != listed or manifest["rows"] != rows:
            raise DataError(f"{folder}: the files do not match {MANIFEST} ({len(listed)} files, {rows} rows; the "
                            f"manifest lists {len(manifest['files'])} files, {manifest['rows']} rows)")
    return {"rows": rows, "products": len(set(keys["product_id"].to_pylist())) if rows else 0, "files": listed}
