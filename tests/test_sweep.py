"""The sweep: pure helpers (Pareto front, results table, statuses), and one small Ray Tune
sweep end to end (one trial that fails on purpose, two that train) nested in MLflow."""
import math
import os
from types import SimpleNamespace

import pandas as pd
import torch
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.adapters import tune_sweep as sweep
from pipeline.config import load_config
from pipeline.adapters.tracking import RUN_NAME_TAG

# ---------------------------------------------------------------- unit

def test_pareto_front_on_hand_made_points():
    #        A: best x   B: on front  C: dominated by B  D: best y   E: NaN   F: equal to B
    xs = [1.0, 2.0, 3.0, 4.0, math.nan, 2.0]
    ys = [5.0, 2.0, 2.5, 1.0, 0.0, 2.0]
    assert sweep.pareto_front(xs, ys) == [True, True, False, True, False, True]
    assert sweep.pareto_front([1, 1], [1, 2]) == [True, False]  # same x, worse y: dominated
    assert sweep.pareto_front([], []) == []


def small_cfg(*extra):
    return load_config(["experiment=sweep_smoke", "train.epochs=3", *extra])


def test_results_table_statuses_front_and_failure_rows():
    cfg = small_cfg()
    metrics = lambda epochs, cost, out: {"training_iteration": epochs, "valid/avg_cost": cost,
                                         "valid/out/violation_rate": out, "valid/in/violation_rate": out / 2}
    records = [
        {"trial": "s-trial-10", "params": {"lr": 1e-3, "weight": 1.0}, "metrics": metrics(3, 10.0, 0.3),
         "error": "", "run_id": "r10"},
        {"trial": "s-trial-2", "params": {"lr": 2e-3, "weight": 9.0}, "metrics": metrics(3, 12.0, 0.1),
         "error": "", "run_id": "r2"},
        # stopped early with the best numbers: measured after fewer epochs, not a front candidate
        {"trial": "s-trial-0", "params": {"lr": 3e-3, "weight": 0.1}, "metrics": metrics(1, 5.0, 0.0),
         "error": "", "run_id": "r0"},
        {"trial": "s-trial-1", "params": {"lr": 4e-3, "weight": 50.0}, "metrics": {},
         "error": "RuntimeError: boom", "run_id": ""},
        {"trial": "s-trial-3", "params": {"lr": 5e-3, "weight": 2.0}, "metrics": metrics(3, 11.0, 0.35),
         "error": "", "run_id": "r3"},
    ]
    table = sweep.results_table(records, cfg, ["weight"])
    assert list(table.trial) == ["s-trial-0", "s-trial-1", "s-trial-2", "s-trial-3", "s-trial-10"]
    assert list(table.status) == [sweep.STOPPED, sweep.FAILED, sweep.FINISHED, sweep.FINISHED, sweep.FINISHED]
    assert list(table.on_front) == [False, False, True, False, True]
    assert list(table.columns) == ["trial", "status", "epochs", "lr", "weight", "valid_avg_cost",
                                   "valid_out_violation_rate", "valid_in_violation_rate", "on_front",
                                   "run_id", "error"]
    failed = table[table.status == sweep.FAILED].iloc[0]
    assert failed.error == "RuntimeError: boom" and failed.epochs == 0 and math.isnan(failed.valid_avg_cost)
    assert "boom" not in sweep.format_results(table.drop(columns="error"))

    # reward objective: higher is better on the x axis
    reward = small_cfg("problem.objective=reward")
    recs = [{"trial": f"s-trial-{i}", "params": {"lr": 1e-3, "weight": 1.0}, "error": "", "run_id": "",
             "metrics": {"training_iteration": 3, "valid/avg_reward": r, "valid/out/violation_rate": v}}
            for i, (r, v) in enumerate([(10.0, 0.2), (8.0, 0.1), (7.0, 0.3)])]
    table = sweep.results_table(recs, reward, ["weight"])
    assert "valid_avg_reward" in table.columns and list(table.on_front) == [True, True, False]


def test_trial_config_and_per_property_search_space():
    cfg = small_cfg("sweep.weights_per_property=true")
    space = sweep.search_space(cfg, 3)
    assert sorted(space) == ["lr", "weight_0", "weight_1", "weight_2"]
    params = {"lr": 0.002, "weight_2": 3.0, "weight_0": 1.0, "weight_1": 2.0}
    trial = sweep.trial_config(cfg, sweep.trial_name(cfg.name, sweep.trial_number("ab12c_00007")), params)
    assert trial.name == "sweep-smoke-trial-7" and trial.train.lr == 0.002 and trial.penalty.weights == [1.0, 2.0, 3.0]
    assert cfg.penalty.weights == [0.0]  # the sweep's own config is untouched
    assert sweep.weight_keys(small_cfg(), 3) == ["weight"]
    assert sweep.local_cpus(cfg) == max(os.cpu_count() or 1, 2 * (1 + 1) + 1)  # 2 trials x (1 worker + 1 spare) + 1


def test_error_summary_unwraps_ray_wrappers():
    inner = ValueError("bad batch\nmore detail")
    worker_group = type("WorkerGroupError", (RuntimeError,), {})("Training failed due to worker errors:\n...")
    worker_group.worker_failures = {0: inner}
    task = type("RayTaskError", (RuntimeError,), {})("ray::run_trial() failed\nTraceback ...")
    task.cause = worker_group
    assert sweep.error_summary(task) == "ValueError: bad batch"
    try:
        try:
            raise KeyError("x")
        except KeyError as e:
            raise RuntimeError("wrapper") from e
    except RuntimeError as e:
        assert sweep.error_summary(e) == "KeyError: 'x'"
    assert sweep.error_summary(None) == ""


def test_settle_runs_marks_asha_stopped_trials_killed():
    class FakeClient:
        def __init__(self):
            self.status = {"a": "RUNNING", "b": "RUNNING", "c": "FAILED"}
            self.tags = {}

        def set_tag(self, run_id, key, value):
            self.tags[(run_id, key)] = value

        def get_run(self, run_id):
            return SimpleNamespace(info=SimpleNamespace(status=self.status[run_id]),
                                   data=SimpleNamespace(tags={k: v for (r, k), v in self.tags.items() if r == run_id}))

        def delete_tag(self, run_id, key):
            del self.tags[(run_id, key)]

        def set_terminated(self, run_id, status):
            self.status[run_id] = status

    client = FakeClient()
    client.tags[("b", sweep.ERROR_TAG)] = "RayActorError: the actor died"  # ended by ASHA mid-run
    table = pd.DataFrame({"trial": ["t-0", "t-1", "t-2"], "status": [sweep.FINISHED, sweep.STOPPED, sweep.FAILED],
                          "error": ["", "", "RuntimeError: x"]})
    children = {f"t-{i}": SimpleNamespace(info=SimpleNamespace(run_id=r)) for i, r in enumerate("abc")}
    sweep.settle_runs(client, table, children)
    assert client.status == {"a": "FINISHED", "b": "KILLED", "c": "FAILED"}
    assert client.tags[("b", sweep.STATUS_TAG)] == sweep.STOPPED
    assert client.tags[("c", sweep.ERROR_TAG)] == "RuntimeError: x" and ("b", sweep.ERROR_TAG) not in client.tags


# ---------------------------------------------------------------- end to end on Ray

@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, ray_session):
    from jobs.sweep import main

    root = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["experiment=sweep_smoke", "name=sw", f"output_dir={root / 'runs'}", f"mlflow.tracking_uri={uri}",
            "mlflow.experiment=test", "data.num_products=30", "data.periods=80", "data.shard_rows=30",
            "train.epochs=1", "train.batch_size=16", "train.horizon=20", "robustness.shock_at=5",
            "sweep.num_samples=3", "sweep.max_concurrent_trials=2", "sweep.grace_period=1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "FAIL_TRIALS", frozenset({0}))  # fails at once; trial 2 takes its place
        assert main(args) == 0
    return root, uri


def test_sweep_nests_trials_and_logs_table_and_plot(tiny_sweep):
    root, uri = tiny_sweep
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test")
    parents = client.search_runs([exp.experiment_id], f"tags.`{RUN_NAME_TAG}` = 'sw'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    by_name = {c.data.tags[RUN_NAME_TAG]: c for c in children}
    assert sorted(by_name) == ["sw-trial-0", "sw-trial-1", "sw-trial-2"]
    assert all(c.info.status != "RUNNING" for c in children)
    trained = [c for c in children if client.get_metric_history(c.info.run_id, "valid/avg_cost")]
    assert sorted(c.data.tags[RUN_NAME_TAG] for c in trained) == ["sw-trial-1", "sw-trial-2"]
    for c in trained:
        assert len(client.get_metric_history(c.info.run_id, "valid/avg_cost")) == 1
        assert c.info.status == "FINISHED" and c.data.tags[sweep.STATUS_TAG] == sweep.FINISHED
    failed = by_name["sw-trial-0"]
    assert failed.info.status == "FAILED" and "failure injected" in failed.data.tags[sweep.ERROR_TAG]

    artifacts = {a.path for a in client.list_artifacts(parent)} | {a.path for a in client.list_artifacts(parent, "plots")}
    assert {"sweep_results.csv", "sweep_results.json", "plots/pareto.png"} <= artifacts
    table = pd.read_csv(root / "runs" / "sw" / "sweep_results.csv", keep_default_na=False)
    assert list(table.trial) == ["sw-trial-0", "sw-trial-1", "sw-trial-2"]
    assert list(table.status) == ["failed", "finished", "finished"] and list(table.epochs) == [0, 1, 1]
    assert table.error[0].startswith("RuntimeError: failure injected")
    assert (table.run_id == [by_name[t].info.run_id for t in table.trial]).all()
    assert table.on_front[1:].astype(str).isin(["True"]).any() and str(table.on_front[0]) == "False"
    assert (root / "runs" / "sw" / "pareto.png").stat().st_size > 0


def test_sweep_registers_its_best_finished_trial_as_challenger_not_champion(tiny_sweep):
    """The best finished trial becomes a new version with the alias @challenger, its
    checkpoint logged to the trial's run as the MLflow model; @champion is only moved by
    jobs.promote, and a smoke sweep registers under the smoke name."""
    from pipeline.adapters.checkpoint import load

    root, uri = tiny_sweep
    client = MlflowClient(uri)
    table = pd.read_csv(root / "runs" / "sw" / "sweep_results.csv", keep_default_na=False)
    done = table[table.status == "finished"]
    best = done.loc[pd.to_numeric(done.valid_avg_cost).idxmin()]
    name = "sidbp-smoke-lost_sales"
    version = client.get_model_version_by_alias(name, "challenger")
    assert version.run_id == best.run_id and version.tags["trial"] == best.trial
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "champion")
    assert not client.search_registered_models("name = 'sidbp-lost_sales'")
    parent = client.search_runs([client.get_experiment_by_name("test").experiment_id], f"tags.`{RUN_NAME_TAG}` = 'sw'")
    assert parent[0].data.tags["challenger"] == f"models:/{name}/{version.version}"
    assert client.get_logged_model(version.tags["model_id"]).source_run_id == best.run_id
    import mlflow

    folder = mlflow.artifacts.download_artifacts(f"models:/{name}@challenger", tracking_uri=uri)
    folder = f"{folder}/artifacts"  # the pyfunc model keeps the checkpoint among its artifacts
    registered = load(f"{folder}/checkpoint.pt")
    on_disk = load(root / "runs" / "sw" / "trials" / best.trial / "checkpoints" / "best" / "checkpoint.pt")
    assert all(torch.equal(registered["policy"][k], v) for k, v in on_disk["policy"].items())
    trial = client.get_run(best.run_id).data.tags
    assert trial["sidbp.kind"] == "trial" and trial["instance"] == "lost_sales L=0-2"
    assert trial["policy_kind"] == "mlp[32,32]"
