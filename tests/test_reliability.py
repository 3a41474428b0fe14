"""Faults a training job meets, each detected and reported (docs/reliability.md)."""
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.errors import NumericalFault
from pipeline.adapters.tracking import RUN_NAME_TAG


def smoke_args(root, name, *extra):
    return ["experiment=smoke", f"name={name}", f"output_dir={root / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "mlflow.experiment=faults", *extra]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, ray_session, monkeypatch):
    """From the second epoch on a weight is NaN before every step: the job stops at the
    first such step, names it, keeps epoch 1's checkpoint untouched and marks the run."""
    from jobs import train
    from pipeline.adapters import checkpoint as ckpt
    from pipeline.core import training

    real, calls = training.train_step, {"n": 0}
    steps_per_epoch = 8  # smoke: 42 training products, one batch of 32, 8 windows

    def poisoned(policy, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > steps_per_epoch:
            with torch.no_grad():
                next(policy.parameters()).view(-1)[0] = math.nan
        return real(policy, *args, **kwargs)

    monkeypatch.setattr(training, "train_step", poisoned)
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
    from pipeline.adapters import ray_train

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


# ---------------------------------------------------------------- dead workers and drivers

# one worker (or none: in the driver's process) gives the same run every time: per-epoch
# seeds and blocks in file order; in-process is the same computation, started faster
RUN = ["train.epochs=3", "train.batch_size=16", "eval.baselines=[]"]


def history(root, name):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id],
                              f"tags.`{RUN_NAME_TAG}` = '{name}'")
    assert len(runs) == 1  # one MLflow run, however often the job was started
    run = runs[0]
    return client, run, {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                                  key=lambda m: (m.step, m.timestamp))]
                         for key in ("train/loss", "valid/avg_cost", "train/resumed_after_epoch")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_session):
    """The uninterrupted run every failure is compared with."""
    from jobs import train

    root = tmp_path_factory.mktemp("faults")
    assert train.main(smoke_args(root, "reference", *RUN, "train.num_workers=0")) == 0
    return root, history(root, "reference")[2]


def wait_for_checkpoint(run_dir, epochs_done, pid_file=None, timeout=300):
    """Poll until the run's latest checkpoint holds ``epochs_done`` epochs (and the worker
    wrote its pid); returns that pid."""
    import time

    from pipeline.adapters import checkpoint as ckpt

    latest, deadline = run_dir / "checkpoints" / "latest" / ckpt.FILE, time.time() + timeout
    while time.time() < deadline:
        ready = pid_file is None or pid_file.exists()
        if ready and latest.exists() and ckpt.load(latest)["epoch"] + 1 >= epochs_done:
            return int(pid_file.read_text()) if pid_file else None
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint of {epochs_done} epochs in {run_dir}")


def test_a_killed_worker_is_restarted_from_the_last_checkpoint_and_the_run_matches(reference):
    """The worker's process is killed (SIGKILL, by its pid) once epoch 1 is checkpointed:
    Ray Train (``train.max_failures``) restarts the worker group from that checkpoint, the
    run completes, its metrics equal the uninterrupted run's to float32 rounding, and the
    MLflow run records the restart (``train/resumed_after_epoch``)."""
    import os
    import signal
    import threading

    from jobs import train

    root, expected = reference
    run_dir, killed = root / "runs" / "worker-kill", {}

    def kill_worker():
        pid = wait_for_checkpoint(run_dir, 1, run_dir / "workers" / "rank-0.pid")
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    killer = threading.Thread(target=kill_worker, daemon=True)
    killer.start()
    assert train.main(smoke_args(root, "worker-kill", *RUN, "train.num_workers=1")) == 0
    killer.join(timeout=5)
    assert killed and int((run_dir / "workers" / "rank-0.pid").read_text()) != killed["pid"]  # a new worker
    _, run, got = history(root, "worker-kill")
    assert run.info.status == "FINISHED"
    assert [s for s, _ in got["train/resumed_after_epoch"]] in ([1], [2])  # epoch 1 or 2 checkpointed at the kill
    for key in ("train/loss", "valid/avg_cost"):
        by_step = dict(got[key])  # an epoch cut short by the kill is logged again when redone: the last value
        assert sorted(by_step) == [0, 1, 2]
        assert by_step == pytest.approx(dict(expected[key]), rel=1e-5)


def test_a_killed_driver_resumes_the_same_run_without_repeating_epochs(reference):
    """The job's whole process group (driver and the Ray it started) is killed once epoch 1
    is checkpointed; the same command again resumes from the checkpoint into the same
    MLflow run, trains only the remaining epochs, and ends where the uninterrupted run does."""
    import os
    import signal
    import subprocess
    import sys

    from jobs import train
    from pipeline.config import PROJECT_ROOT

    root, expected = reference
    run_dir = root / "runs" / "driver-kill"
    args = smoke_args(root, "driver-kill", *RUN, "train.num_workers=0")
    job = subprocess.Popen([sys.executable, "-m", "jobs.train", *args],
                           cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    try:
        wait_for_checkpoint(run_dir, 1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    _, run, partial = history(root, "driver-kill")
    assert run.info.status == "RUNNING"  # nobody could mark it
    logged = len(partial["valid/avg_cost"])
    assert logged in (1, 2, 3)

    assert train.main(args) == 0
    _, run, got = history(root, "driver-kill")
    assert run.info.status == "FINISHED"
    (step, resumed), = got["train/resumed_after_epoch"]
    resumed = int(resumed)
    assert step == resumed and 1 <= resumed <= logged  # from the last checkpoint before the kill
    steps = [s for s, _ in got["valid/avg_cost"]]
    assert sorted(set(steps)) == [0, 1, 2]
    # checkpointed epochs are not trained again; an epoch cut short after its metrics were
    # logged (before its checkpoint) is redone and logged again at its step
    assert [steps.count(k) for k in range(resumed)] == [1] * resumed
    for key in ("train/loss", "valid/avg_cost"):
        assert dict(got[key]) == pytest.approx(dict(expected[key]), rel=1e-5)


def test_a_killed_sweep_resumes_its_unfinished_trials(tmp_path, ray_session):
    """A sweep whose driver is killed (its process group) once its trial has checkpointed an
    epoch: the same command resumes it into the same MLflow run, and the trial continues
    from its latest checkpoint (the epochs it holds are not trained again). The kill lands
    after at least one epoch; on a busy machine the trial may checkpoint more before it
    takes effect, so the test has epochs to spare and reads where the trial resumed. One
    trial keeps the test short; each unfinished trial is restored the same way."""
    import os
    import signal
    import subprocess
    import sys

    import pandas as pd

    from jobs import sweep
    from pipeline.adapters import checkpoint as ckpt
    from pipeline.config import PROJECT_ROOT

    epochs = 5
    args = smoke_args(tmp_path, "sw-kill", "experiment=sweep_smoke", "data.num_products=30", "data.periods=80",
                      "data.shard_rows=30", f"train.epochs={epochs}", "train.horizon=20", "robustness.shock_at=5",
                      "sweep.num_samples=1", "sweep.max_concurrent_trials=1", f"sweep.grace_period={epochs}",
                      "eval.baselines=[]")
    trials = tmp_path / "runs" / "sw-kill" / "trials"
    job = subprocess.Popen([sys.executable, "-m", "jobs.sweep", *args], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True,
                           env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    try:
        wait_for_checkpoint(trials / "sw-kill-trial-0", 1)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    assert not (tmp_path / "runs" / "sw-kill" / "sweep_results.csv").exists()  # it was cut short
    # at least this many epochs were checkpointed; Ray's worker processes may outlive the
    # killed driver for a moment and checkpoint one more
    done = ckpt.load(trials / "sw-kill-trial-0" / "checkpoints" / "latest" / ckpt.FILE)["epoch"] + 1
    assert 1 <= done < epochs, f"the kill came after {done} of {epochs} epochs"

    assert sweep.main(args) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults").experiment_id
    sweeps = client.search_runs([experiment], f"tags.`{RUN_NAME_TAG}` = 'sw-kill' and tags.`sidbp.kind` = 'sweep'")
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    children = {r.data.tags[RUN_NAME_TAG]: r for r in client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{sweeps[0].info.run_id}'")}
    assert sorted(children) == ["sw-kill-trial-0"]
    for run in children.values():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid/avg_cost")]
        (resumed,) = client.get_metric_history(run.info.run_id, "train/resumed_after_epoch")
        after = int(resumed.value)
        assert resumed.step == after and done <= after < epochs  # from the latest checkpoint
        assert sorted(set(steps)) == list(range(epochs))
        assert all(steps.count(e) == 1 for e in range(after))  # checkpointed epochs not trained again
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
    table = pd.read_csv(tmp_path / "runs" / "sw-kill" / "sweep_results.csv")
    assert list(table.status) == ["finished"] and list(table.epochs) == [epochs]
