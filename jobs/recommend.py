"""Batch inference: next period's order quantity for every product in a Parquet dataset.

    python -m jobs.recommend [experiment=NAME] [model.uri=URI] [recommend.input=PATH]
        [recommend.output=FOLDER] [recommend.state=columns|simulate] [key=value ...]

For every product (one row: ``product_id``, ``demand`` history, ``lead_time`` and the cost
columns) the policy computes the order for the period after its history, from that history
and the product's current state: the data's state columns (``on_hand``, ``pipeline_1``, ...
for lost sales: the problem's state names), or with ``recommend.state=simulate`` the state
the policy ends the history in when run from an empty system. Ray Data's ``map_batches``
runs ``recommend.concurrency`` actors, each holding the policy; each batch is written as a
Parquet file under ``recommend.output`` with columns ``product_id, period, lead_time``, the
state, the actions (``order``, ...), ``state_source`` and ``model_version``. Each file is
named by its products and the model version, so a batch run again after a failure
replaces its own file; the set is written to a staging folder, checked (one row per
product and period), listed in ``_manifest.json`` (rows, products, files with their row
counts, model version, input and its data version) and only then put in place of the
previous output (docs/mlflow.md, "Orders, exactly once").
``model.uri`` as in ``jobs.evaluate`` (default: the registered model's @champion).
"""
from __future__ import annotations

import time

from jobs import _cli
from pipeline.config import load_config, resolve_path
from pipeline.reporting import logs


def main(args: list[str]) -> int:
    cfg = load_config(args)  # before the heavy imports, so mistakes are reported at once
    from pipeline.data.synthetic import materialize
    from pipeline.data.parquet import validate_products
    from pipeline.core.problems import get_problem
    from pipeline.adapters.ray_session import init_ray
    from pipeline.adapters.batch_inference import MANIFEST, recommend
    from pipeline.adapters.registry import load_model

    started = time.time()
    _, cfg, state, model = load_model(cfg)
    r = cfg.recommend
    logs.get("model").info(f"{model.version} (asked for {model.uri}): {cfg.problem.name}, {cfg.policy.kind} "
                           f"policy, epoch {state['epoch']}")
    if r.input:
        source = resolve_path(r.input)
        if not source.exists():
            raise FileNotFoundError(f"recommend.input {source} does not exist")
    else:
        source = materialize(cfg.data, cfg.seed, resolve_path(cfg.output_dir))["test"]
    checked = validate_products(source, min_periods=cfg.policy.window + 1,
                                problem=get_problem(cfg.problem.name, cfg.problem.params))
    total = checked["products"]
    output = resolve_path(r.output) if r.output else resolve_path(cfg.output_dir) / cfg.name / "recommendations"
    logs.get("recommend").info(f"{total:,} products from {source}, state from {r.state}, "
                               f"{r.concurrency} actor(s), batches of {r.batch_size}")
    init_ray(cfg)
    manifest = recommend(source, output, model.checkpoint, model.version, r.state,
                         cfg.eval.round_actions, r.batch_size, r.concurrency, total,
                         progress=logs.get("").info)
    logs.get("").info(f"\nRecommendations: {output} ({manifest['products']:,} products in "
                      f"{len(manifest['files'])} files, model {model.version}; checked and listed in "
                      f"{output / MANIFEST})\n"
                      f"Wall time:  {time.time() - started:.0f}s")
    return 0


if __name__ == "__main__":
    _cli.run("recommend", main)
