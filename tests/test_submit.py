"""Real job submission: a Ray head started as its own process (``ray start --head`` on
127.0.0.1, stopped afterwards), ``jobs.train experiment=smoke`` submitted through the Ray
Jobs API with the project as working directory (``infra/runtime_env.yaml``), waited for
until SUCCEEDED, and the MLflow run it produced checked."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.config import PROJECT_ROOT
from pipeline.adapters.tracking import KIND_TAG, RUN_NAME_TAG

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head --block`` in its own process group: stopping it (SIGTERM to the
    group) ends this head only, not the Ray the other tests share."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    # every port of its own: the Ray the other tests share holds the default agent ports
    ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "runtime-env-agent-port", "metrics-export-port",
                                                     "ray-client-server-port", "node-manager-port",
                                                     "object-manager-port")]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=3",
                             "--include-dashboard=true", f"--temp-dir={temp}", "--disable-usage-stats", *ports],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    from ray.job_submission import JobSubmissionClient

    address = f"http://127.0.0.1:{dashboard}"
    deadline, client = time.time() + 120, None
    while client is None:
        try:
            client = JobSubmissionClient(address)
        except Exception:
            if time.time() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL)
                pytest.fail(f"the Ray head did not come up at {address} (exit {head.poll()})")
            time.sleep(1)
    yield client
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def test_train_job_submitted_to_a_ray_head_succeeds_and_leaves_its_mlflow_run(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    from pipeline.adapters.tracking import git_commit

    runtime_env = yaml.safe_load((PROJECT_ROOT / "infra" / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(PROJECT_ROOT)
    commit = git_commit()  # the job's copy has no .git: the commit travels as an environment variable
    runtime_env.setdefault("env_vars", {})["SIDBP_GIT_COMMIT"] = commit
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    entrypoint = (f"{sys.executable} -m jobs.train experiment=smoke name=submitted output_dir={tmp_path / 'runs'} "
                  f"mlflow.tracking_uri={uri} mlflow.experiment=submit")
    deadline = time.time() + 120
    while True:  # the head's job agent may still be starting
        try:
            job = ray_head.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
            break
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)
    deadline, status = time.time() + 480, None
    while time.time() < deadline:
        status = ray_head.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(2)
    logs = ray_head.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "[train] epoch 2/2" in logs and "Test products:" in logs
    # the project folder was packed and uploaded to the cluster: the job ran from that copy
    assert ray_head.get_job_info(job).runtime_env["working_dir"].startswith("gcs://")

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("submit").experiment_id],
                              f"tags.`{RUN_NAME_TAG}` = 'submitted'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[KIND_TAG] == "train" and run.data.tags["git_commit"] == commit
    assert run.data.tags["problem"] == "lost_sales" and run.data.tags["policy_kind"] == "cnn[32,32]"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    assert run.data.metrics["test/learned/avg_cost"] > 0 and run.data.metrics["test/omniscient/gap_pct"] == 0
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]
    assert (tmp_path / "runs" / "submitted" / "evaluation.csv").exists()
