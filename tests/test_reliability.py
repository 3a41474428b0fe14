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


# ---------------------------------------------------------------- the tracking server

class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over a SQLite file, stopped and started again at will."""

    def __init__(self, root):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root, self.process = root, None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self):
        import subprocess
        import sys
        import time
        import urllib.request
        from pathlib import Path

        mlflow = Path(sys.executable).with_name("mlflow")
        store = f"sqlite:///{self.root / 's.db'}"
        self.process = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", store,
                                         "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                                        cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start at {self.uri}")

    def stop(self):
        import os
        import signal

        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None


def test_an_unreachable_tracking_server_at_start_fails_at_once(tmp_path, monkeypatch, capsys):
    import sys
    import time

    from jobs import _cli, train

    down = MlflowServer(tmp_path)  # a free port nobody listens on
    monkeypatch.setattr(sys, "argv", ["train", "experiment=smoke", f"mlflow.tracking_uri={down.uri}",
                                      f"output_dir={tmp_path / 'runs'}"])
    started = time.time()
    with pytest.raises(SystemExit) as exit_:
        _cli.run("train", train.main)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and time.time() - started < 30
    assert err.startswith(f"error: MLflow tracking server {down.uri} is not reachable (")
    assert not (tmp_path / "runs" / "data").exists()  # no data was prepared, no Ray started


def test_a_tracking_outage_during_training_loses_no_metrics_and_is_reported(tmp_path, ray_session, monkeypatch):
    """The server is stopped after epoch 1's metrics and started again at epoch 4: training
    goes on, epochs 2 and 3 are buffered and arrive when it is back, the gap is recorded."""
    from jobs import train
    from pipeline import ray_train

    server = MlflowServer(tmp_path)
    server.start()
    real, epochs = ray_train.validation_metrics, []

    def validation_with_outage(*args, **kwargs):  # rank 0, after each epoch's training, before logging
        epochs.append(len(epochs))
        if len(epochs) == 2:
            server.stop()
        if len(epochs) == 4:
            server.start()
        return real(*args, **kwargs)

    monkeypatch.setattr(ray_train, "validation_metrics", validation_with_outage)
    try:
        assert train.main(["experiment=smoke", "name=outage", f"output_dir={tmp_path / 'runs'}",
                           f"mlflow.tracking_uri={server.uri}", "mlflow.experiment=faults", "train.num_workers=0",
                           "train.epochs=4"]) == 0
        client = MlflowClient(server.uri)
        run = client.search_runs([client.get_experiment_by_name("faults").experiment_id],
                                 f"tags.`{RUN_NAME_TAG}` = 'outage'")[0]
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1, 2, 3]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "valid/avg_cost")] == [0, 1, 2, 3]
        assert run.data.metrics["tracking/buffered_epochs"] == 2
        assert run.data.tags["sidbp.tracking_gap"].startswith("tracking server unreachable for ")
        assert "2 epochs of metrics were buffered" in run.data.tags["sidbp.tracking_gap"]
    finally:
        server.stop()
