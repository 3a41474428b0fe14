"""End to end on Ray: a 2-worker Ray Train job with the structure penalty on tiny data
leaves a complete MLflow run, and running it again with the same name resumes from its
checkpoint."""
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs.train import main
from pipeline.adapters.tracking import RUN_NAME_TAG


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("job")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["experiment=smoke", "name=two-workers", f"output_dir={root / 'runs'}",
            f"mlflow.tracking_uri={uri}", "mlflow.experiment=test", "train.num_workers=2",
            "data.num_products=40", "data.shard_rows=8", "train.batch_size=8", "train.epochs=2",
            "penalty.weights=[1.0]"]
    assert main(args) == 0
    return root, uri, args


def the_run(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test")
    runs = client.search_runs([exp.experiment_id], f"tags.`{RUN_NAME_TAG}` = 'two-workers'")
    assert len(runs) == 1
    return client, runs[0]


def test_mlflow_run_has_params_metrics_and_artifacts(tiny_job):
    root, uri, _ = tiny_job
    client, run = the_run(uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2" and run.data.params["problem.name"] == "lost_sales"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [0, 1]
    assert len(client.get_metric_history(run.info.run_id, "valid/avg_cost")) == 2
    for key in ("train/epoch_seconds", "valid/seconds", "train/checkpoint_seconds"):  # an epoch's wall time, in parts
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1]
    m = run.data.metrics
    for policy in ("learned", "omniscient", "estimated", "best_constant"):
        assert m[f"test/{policy}/avg_cost"] > 0
    assert m["test/omniscient/gap_pct"] == 0.0
    # the penalty trained on both workers, and the violations were measured per property
    assert len(client.get_metric_history(run.info.run_id, "train/penalty")) == 2
    assert 0 <= m["test/learned/out/violation_rate"] <= 1
    assert 0 <= m["test/learned/in/order.on_hand.bound/violation_rate"] <= 1
    assert "test/omniscient/violation_rate_in" not in m  # measured for the network only
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for d in ("plots", "checkpoint") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"config.yaml", "evaluation.csv", "evaluation.json", "plots/learning_curve.png",
            "plots/order_vs_on_hand.png", "checkpoint/checkpoint.pt"} <= artifacts
    table = (root / "runs" / "two-workers" / "evaluation.csv").read_text().splitlines()
    assert table[0].startswith("policy,avg_cost,avg_reward,fill_rate") and len(table) == 5
    # every Ray Train worker logged its system metrics to the run, under its rank
    for rank in (0, 1):
        for key in ("cpu_utilization_percentage", "system_memory_usage_megabytes", "process_memory_megabytes"):
            assert len(client.get_metric_history(run.info.run_id, f"system/rank_{rank}/{key}")) >= 1, (rank, key)
        assert m[f"system/rank_{rank}/process_memory_megabytes"] > 10
    assert not any(k.startswith("system/rank_2/") for k in m)


def test_same_run_name_resumes_from_checkpoint_in_process(tiny_job):
    """Resume with one more epoch, this time with num_workers=0 (in the driver process)."""
    root, uri, args = tiny_job
    assert main(args[:-1] + ["train.epochs=3", "train.num_workers=0"]) == 0
    client, run = the_run(uri)  # still one run
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == [0, 1, 2]  # epochs 0 and 1 were not trained again
    assert run.data.params["train.num_workers"] == "2"  # the params of the run's first job
    # ... and the change is recorded: a tag, a list of the changes, the config it had before
    changed = run.data.tags["sidbp.config_changed"]
    assert "train.epochs: 2 -> 3" in changed and "train.num_workers: 2 -> 0" in changed
    assert "penalty.weights: [1.0] -> [0.0]" in changed and "train.lr" not in changed
    [changes] = client.list_artifacts(run.info.run_id, "config_changes")
    assert changes.path.endswith(".txt") and changed.startswith(changes.path.split("/")[1][:-4] + ": ")
    read = lambda path: Path(client.download_artifacts(run.info.run_id, path, str(root))).read_text()
    assert "train.epochs: 2 -> 3\n" in read(changes.path)
    [history] = client.list_artifacts(run.info.run_id, "config_history")
    before, now = read(history.path), read("config.yaml")
    assert "\n  epochs: 2\n" in before and "\n  epochs: 3\n" in now


def test_every_run_carries_the_review_tags_and_a_description(tiny_job):
    import getpass
    import json

    from pipeline.data.parquet import data_version
    from pipeline.adapters.tracking import NOTE_TAG, git_commit, source_tags

    root, uri, _ = tiny_job
    _, run = the_run(uri)
    tags = run.data.tags
    data_root = next((root / "runs" / "data").glob("synthetic-*"))
    assert {k: tags[k] for k in ("sidbp.kind", "problem", "instance", "policy_kind", "penalty_weights")} == {
        "sidbp.kind": "train", "problem": "lost_sales", "instance": "lost_sales L=0-2", "policy_kind": "cnn[32,32]",
        "penalty_weights": "[0.0]"}  # the tags of the latest job on the run: the resumed one, without penalty
    assert tags["data_version"] == data_version(data_root) and len(tags["data_version"]) == 12
    assert tags["git_commit"] == git_commit() != "unknown"
    assert tags[NOTE_TAG].startswith("**train** run `two-workers`: cnn policy") and "weights [0.0]" in tags[NOTE_TAG]
    # MLflow's user and source tags: the runs table shows a user, not "unknown"
    assert tags["mlflow.user"] == run.info.user_id == getpass.getuser() != "unknown"
    assert tags["mlflow.source.name"] == source_tags()["mlflow.source.name"] != ""
    assert tags["mlflow.source.type"] == "LOCAL"  # a test; the project's jobs are JOB
    assert tags["mlflow.source.git.commit"] == git_commit().removesuffix("-dirty")
    # the data as an MLflow dataset input, its digest the data version (resumed on the same data: one input)
    [given] = run.inputs.dataset_inputs
    assert given.dataset.digest == tags["data_version"] and given.dataset.name == data_root.name
    assert json.loads(given.dataset.source) == {"uri": data_root.resolve().as_uri()}
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training"}


def test_evaluate_recommend_and_compare_on_the_trained_run(tiny_job, capsys):
    """``jobs.evaluate`` on the run's checkpoint reproduces the training job's test table;
    ``jobs.recommend`` writes one order per test product with the model version;
    ``jobs.compare`` shows both runs side by side."""
    import pandas as pd

    from jobs import compare, evaluate, recommend

    root, uri, args = tiny_job
    _, run = the_run(uri)
    model = f"model.uri=runs:/{run.info.run_id}"
    common = [a for a in args if not a.startswith(("train.", "penalty."))]
    assert evaluate.main(common + [model]) == 0
    trained = pd.read_csv(root / "runs" / "two-workers" / "evaluation.csv")
    evaluated = pd.read_csv(root / "runs" / "two-workers" / "evaluate" / "evaluation.csv")
    pd.testing.assert_frame_equal(trained, evaluated)

    assert recommend.main(common + [model, "recommend.state=simulate", "recommend.batch_size=5"]) == 0
    out = pd.read_parquet(root / "runs" / "two-workers" / "recommendations")
    test = pd.read_parquet(next((root / "runs" / "data").glob("synthetic-*")) / "test")
    assert sorted(out.product_id) == sorted(test.product_id)
    assert (out.model_version == f"runs:/{run.info.run_id}").all() and (out.period == 120).all()
    assert (out.order >= 0).all() and (out.order == out.order.round()).all() and out.order.sum() > 0

    capsys.readouterr()
    assert compare.main(["mlflow_experiment=test", f"mlflow.tracking_uri={uri}", "compare.runs=2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = printed[2].split()
    assert header[0] == "two-workers" and header[1].startswith("two-workers@")
    kinds = next(line for line in printed if line.startswith("kind")).split()
    assert kinds[1:] == ["evaluate", "train"]
    gap = next(line for line in printed if line.startswith("test/learned/gap_pct")).split()
    assert gap[1] == gap[2] == f"{trained.set_index('policy').gap_pct['learned']:,.4f}"


def test_a_split_within_data_cache_mib_is_read_once_into_the_object_store(tmp_path, ray_session):
    import ray.data
    from ray.data.dataset import MaterializedDataset

    from pipeline.adapters.ray_train import cached
    from pipeline.config import load_config
    from pipeline.data.parquet import count_rows, memory_size
    from pipeline.data.synthetic import materialize

    cfg = load_config(["data.num_products=60", "data.shard_rows=20"])
    train = materialize(cfg.data, 0, tmp_path)["train"]
    size = memory_size(train)
    assert count_rows(train) * cfg.data.periods * 4 < size < count_rows(train) * cfg.data.periods * 8  # demand, scalars
    ds = ray.data.read_parquet(str(train))
    assert cached(ds, train, 0) is ds  # streamed every epoch
    kept = cached(ds, train, 1)
    assert isinstance(kept, MaterializedDataset) and kept.count() == count_rows(train)
