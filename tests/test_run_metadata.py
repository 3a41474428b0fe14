"""Run metadata (docs/mlflow.md, Run metadata) that needs no training run: the source tags,
the seeded sweep search, checkpoints read with ``weights_only``, and the workers' system
metrics against an unreachable tracking server. What a real run carries is checked on the
training job of tests/test_ray_mlflow.py."""
import pickle
import sys
import time
import types

import numpy as np
import pytest
import torch

from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.tracking import WorkerSystemMetrics, source_tags
from pipeline.config import load_config


def test_source_tags_name_the_job_module_and_its_type(monkeypatch):
    job = types.ModuleType("__main__")
    job.__spec__ = types.SimpleNamespace(name="jobs.train")  # python -m jobs.train
    monkeypatch.setitem(sys.modules, "__main__", job)
    tags = source_tags("0123abcd-dirty")
    assert tags["mlflow.source.name"] == "jobs.train" and tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.source.git.commit"] == "0123abcd" and tags["mlflow.user"] not in ("", "unknown")
    script = types.ModuleType("__main__")
    script.__spec__ = None  # python some/where/notebook_export.py
    monkeypatch.setitem(sys.modules, "__main__", script)
    monkeypatch.setattr(sys, "argv", ["/some/where/notebook_export.py"])
    tags = source_tags("unknown")
    assert tags["mlflow.source.name"] == "notebook_export.py" and tags["mlflow.source.type"] == "LOCAL"
    assert "mlflow.source.git.commit" not in tags


def test_the_sweep_draws_its_trials_from_the_seed():
    from pipeline.adapters import tune_sweep as sweep

    def trials(*overrides):
        return sweep.draw_trials(load_config(["experiment=sweep_smoke", "sweep.num_samples=5", *overrides]), 3)

    first = trials("seed=7")
    assert first == trials("seed=7")  # same seed: the same trials, in the same order
    other = trials("seed=8")
    assert len(first) == len(other) == 5 and all(a["lr"] != b["lr"] for a, b in zip(first, other))
    cfg = load_config(["experiment=sweep_smoke", "sweep.num_samples=5"])
    for t in first:
        assert set(t) == {"lr", "weight"}
        assert cfg.sweep.lr_range[0] <= t["lr"] <= cfg.sweep.lr_range[1]
        assert cfg.sweep.weight_range[0] <= t["weight"] <= cfg.sweep.weight_range[1]
    assert len({t["lr"] for t in first}) == 5
    per_property = trials("seed=7", "sweep.weights_per_property=true")
    assert set(per_property[0]) == {"lr", "weight_0", "weight_1", "weight_2"}
    # Tune evaluates exactly these points: every key is one of the search space's
    space = sweep.search_space(load_config(["experiment=sweep_smoke", "sweep.weights_per_property=true"]), 3)
    assert set(per_property[0]) == set(space)


class Payload:
    """An arbitrary object: unpickling it runs code (here only a constructor)."""


def test_checkpoints_are_loaded_weights_only(tmp_path):
    from pipeline.core.policy import build_policy
    from pipeline.core.problems import get_problem

    cfg = load_config([])
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])
    policy = build_policy(cfg.policy, width, problem)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    sum(p.sum() for p in policy.parameters()).backward()
    optimizer.step()  # an optimiser state with tensors, ints, floats, tuples
    metrics = {"best_valid": np.float64(1.5), "valid/avg_cost": torch.tensor(2.5), "epoch": 3, "x": float("inf")}
    path = ckpt.save(tmp_path / "ok" / ckpt.FILE, policy, optimizer, 3, cfg, width, metrics)
    state = ckpt.load(path)  # what the trainer writes loads with weights_only=True
    assert state["epoch"] == 3 and state["metrics"] == {"best_valid": 1.5, "valid/avg_cost": 2.5, "epoch": 3,
                                                        "x": float("inf")}
    assert type(state["metrics"]["best_valid"]) is float
    restored, _, _ = ckpt.load_policy(path)
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), policy.state_dict().values()))

    forged = tmp_path / "forged" / ckpt.FILE
    forged.parent.mkdir()
    torch.save({**torch.load(path, weights_only=True), "metrics": {"x": Payload()}}, forged)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        ckpt.load(forged)


def test_worker_system_metrics_never_wait_on_an_unreachable_server():
    """Port 9 (discard) refuses connections: MLflow's client would retry for minutes."""
    tic = time.time()
    monitor = WorkerSystemMetrics("http://127.0.0.1:9", "0" * 32, rank=3, seconds=0.1).start()
    assert monitor.thread is not None and time.time() - tic < 2  # started: sampling on its own thread
    time.sleep(0.3)
    monitor.stop(wait=0.5)
    assert time.time() - tic < 3.5 and monitor.thread is None
