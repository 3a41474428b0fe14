"""Faults a training job meets, each detected and reported (docs/reliability.md)."""
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.errors import NumericalFault
from pipeline.tracking import RUN_NAME_TAG


def smoke_args(root, name, *extra):
    return ["experiment=smoke", f"name={name}", f"output_dir={root / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "mlflow.experiment=faults", *extra]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, ray_session, monkeypatch):
    """From the second epoch on a weight is NaN before every step: the job stops at the
    first such step, names it, keeps epoch 1's checkpoint untouched and marks the run."""
    from jobs import train
    from pipeline import checkpoint as ckpt
    from pipeline import ray_train

    real, calls = ray_train.train_step, {"n": 0}
    steps_per_epoch = 8  # smoke: 42 training products, one batch of 32, 8 windows

    def poisoned(policy, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps_per_epoch:
            with torch.no_grad():
                next(policy.parameters()).view(-1)[0] = math.nan
        return real(policy, *args, **kwargs)

    monkeypatch.setattr(ray_train, "train_step", poisoned)
    args = smoke_args(tmp_path, "nan", "train.num_workers=0", "train.epochs=3")
    with pytest.raises(NumericalFault, match=r"training stopped at epoch 2, step 1: non-finite loss nan .*"
                                             r"the last good checkpoint \(epoch 1\) is kept at .*latest"):
        train.main(args)
    assert calls["n"] == steps_per_epoch + 1
    state = ckpt.load(tmp_path / "runs" / "nan" / "checkpoints" / "latest" / ckpt.FILE)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["policy"].values())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults").experiment_id
    run = client.search_runs([experiment], f"tags.`{RUN_NAME_TAG}` = 'nan'")[0]
    assert run.info.status == "FAILED" and run.data.tags["sidbp.error"].startswith("NumericalFault: training stopped")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0]
