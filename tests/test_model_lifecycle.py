"""From a training run to tomorrow's orders: the best checkpoint as an MLflow pyfunc model
(loaded from runs:/ and models:/, served over HTTP: the orders jobs.recommend writes),
gated promotion (challenger against champion, recorded either way), and order files
written exactly once (a rerun and a killed actor leave one row per product)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipeline.adapters.batch_inference import MANIFEST, Recommender, check_output
from pipeline.adapters.promotion import DECISION_TAG, decide
from pipeline.errors import DataError

MODEL = "sidbp-smoke-lost_sales"  # smoke runs register apart from the real policies


def args_for(root: Path, *extra: str) -> list[str]:
    return ["experiment=smoke", "name=life", f"output_dir={root / 'runs'}", "train.num_workers=0",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "mlflow.experiment=lifecycle", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One smoke training job: its run logs the pyfunc model and registers it as
    models:/sidbp-smoke-lost_sales/1 @challenger."""
    from jobs import train

    root = tmp_path_factory.mktemp("lifecycle")
    assert train.main(args_for(root)) == 0
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    version = client.get_model_version_by_alias(MODEL, "challenger")
    test = next((root / "runs" / "data").glob("synthetic-*")) / "test"
    return {"root": root, "client": client, "version": version, "run_id": version.run_id, "test": test}


def products(folder: Path) -> pd.DataFrame:
    """The products of a Parquet split as a model request: no ground-truth columns."""
    frame = pq.read_table(folder).to_pandas().sort_values("product_id", ignore_index=True)
    return frame.drop(columns=["true_dist", "true_mean", "true_shape"])


def orders(folder: Path) -> pd.DataFrame:
    return pq.read_table(folder).to_pandas().sort_values("product_id", ignore_index=True)


def recommend(root: Path, output: Path, *extra: str) -> int:
    from jobs import recommend as job
    return job.main(args_for(root, f"recommend.output={output}", "recommend.batch_size=5", *extra))


def test_the_logged_model_gives_the_orders_jobs_recommend_writes(trained, ray_session):
    import mlflow

    root, client, run_id, version = trained["root"], trained["client"], trained["run_id"], trained["version"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    assert recommend(root, root / "rec", f"model.uri=runs:/{run_id}") == 0
    written = orders(root / "rec")
    request = products(trained["test"])
    for uri in (f"runs:/{run_id}/policy", f"models:/{MODEL}/{version.version}", f"models:/{MODEL}@challenger"):
        model = mlflow.pyfunc.load_model(uri)
        got = model.predict(request, params={"state": "simulate"}).sort_values("product_id", ignore_index=True)
        assert list(got.product_id) == list(written.product_id)
        np.testing.assert_allclose(got.order.to_numpy(), written.order.to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(got.on_hand.to_numpy(), written.on_hand.to_numpy(), rtol=1e-6)
    # with the state in the request (as recommend.state=columns reads it), the same orders
    stated = request.assign(on_hand=written.on_hand, pipeline_1=written.pipeline_1)
    np.testing.assert_allclose(model.predict(stated).order.to_numpy(), written.order.to_numpy(), rtol=1e-6)

    signature = model.metadata.signature
    names = {c.name: c.required for c in signature.inputs.inputs}
    assert names["demand"] and names["lead_time"] and names["holding_cost"] and not names["on_hand"]
    assert "order" in signature.outputs.input_names() and signature.params.to_dict()[0]["default"] == "columns"
    logged = client.get_logged_model(version.tags["model_id"])  # an MLflow 3 logged model of the run, with its metrics
    assert logged.source_run_id == run_id and logged.name == "policy"
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": MODEL, "version": version.version}]
    linked = {m.key: m.value for m in logged.metrics}
    run_metrics = client.get_run(run_id).data.metrics
    assert linked["test/learned/avg_cost"] == pytest.approx(run_metrics["test/learned/avg_cost"])
    assert "valid/avg_cost" in linked  # the best epoch's metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_with_the_same_orders(trained):
    """``mlflow models serve`` on loopback, posted the model's own serving example."""
    import mlflow

    root, version = trained["root"], trained["version"]
    uri = f"models:/{MODEL}/{version.version}"
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    local = Path(mlflow.artifacts.download_artifacts(uri, tracking_uri=tracking))
    body = (local / "serving_input_example.json").read_text()
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the scoring server did not start"
                time.sleep(0.5)
        asked = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body.encode(),
                                       headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(asked, timeout=30) as answer:
            served = pd.DataFrame(json.loads(answer.read())["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    mlflow.set_tracking_uri(tracking)
    example = json.loads(body)["dataframe_split"]
    expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame(example["data"], columns=example["columns"]))
    assert len(served) == len(example["data"]) >= 1
    np.testing.assert_allclose(served.order.to_numpy(), expected.order.to_numpy(), rtol=1e-6)


def test_recommend_twice_writes_the_same_files_once_with_a_manifest(trained, ray_session):
    import mlflow

    root, version = trained["root"], trained["version"]
    mlflow.set_tracking_uri(f"sqlite:///{root / 'elsewhere.db'}")  # the job must use its configured store
    output, uri = root / "twice", f"model.uri=models:/{MODEL}/{version.version}"
    assert recommend(root, output, uri) == 0
    first = sorted(p.name for p in output.glob("part-*.parquet"))
    assert recommend(root, output, uri) == 0
    assert sorted(p.name for p in output.glob("part-*.parquet")) == first and len(first) >= 3  # batches of 5
    table = orders(output)
    assert table.groupby(["product_id", "period"]).size().max() == 1 and len(table) == 12
    manifest = json.loads((output / MANIFEST).read_text())
    assert manifest["rows"] == manifest["products"] == 12 and sum(manifest["files"].values()) == 12
    assert manifest["model_version"] == f"models:/{MODEL}/{version.version}"
    assert len(manifest["input_version"]) == 12 and manifest["input"] == str(trained["test"])
    assert check_output(output, 12)["rows"] == 12
    (output / first[0]).unlink()  # a downstream job's check finds a file missing
    with pytest.raises(DataError, match="do not match"):
        check_output(output)


class DyingRecommender(Recommender):
    """Dies (the actor's process exits) right after writing its second batch, once: Ray
    Data restarts the actor and runs that batch again."""

    calls = 0

    def __call__(self, cols):
        out = super().__call__(cols)
        DyingRecommender.calls += 1
        marker = Path(self.output).parent / "died-once"
        if DyingRecommender.calls == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return out


def test_an_actor_killed_after_writing_leaves_one_row_per_product(trained, ray_session):
    import ray.cloudpickle

    from pipeline.adapters import batch_inference
    from pipeline.adapters.registry import resolve_model
    from pipeline.config import load_config

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the class travels to the actor by value
    root, version = trained["root"], trained["version"]
    cfg = load_config(args_for(root))
    model = resolve_model(f"models:/{MODEL}/{version.version}", cfg)
    output = root / "killed"
    manifest = batch_inference.recommend(trained["test"], output, model.checkpoint, model.version, "simulate", True,
                                         5, 1, 12, progress=lambda line: None, recommender=DyingRecommender)
    assert (root / "died-once").exists()  # the actor did die after writing a batch
    table = orders(output)
    assert len(table) == 12 and table.product_id.is_unique and manifest["rows"] == 12
    assert sorted(p.name for p in output.glob("part-*.parquet")) == sorted(manifest["files"])
    assert not list(output.glob(".*")) and not list(root.glob(".killed.*"))  # no temporary or staging files left


def test_promotion_moves_champion_only_for_a_better_challenger_and_records_both(trained, tmp_path):
    """A constant policy that orders five times the mean demand every period (no violations,
    a huge holding cost) becomes the first champion; the trained policy beats it (with the
    violation tolerance opened, as the smoke run is barely trained) and is promoted; the
    constant one again, as challenger, is rejected. Each decision is on its version and in a
    promote run."""
    import torch

    from jobs import promote
    from pipeline.adapters import checkpoint as ckpt
    from pipeline.adapters.mlflow_model import log_policy_model
    from pipeline.adapters.registry import register_challenger
    from pipeline.config import load_config

    root, client = trained["root"], trained["client"]
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(args_for(root))
    good = trained["version"]
    state = ckpt.load(root / "runs" / "life" / "checkpoints" / "best" / ckpt.FILE)
    policy, trained_cfg, _ = ckpt.load_policy(root / "runs" / "life" / "checkpoints" / "best" / ckpt.FILE)
    with torch.no_grad():
        policy.head[-1].weight.zero_()
        policy.head[-1].bias.fill_(5.0)
    flood = ckpt.save(tmp_path / ckpt.FILE, policy, None, state["epoch"], trained_cfg, state["state_width"])
    experiment = client.get_experiment_by_name("lifecycle").experiment_id

    def register(checkpoint, run_id=None, model_id=None):
        if model_id is None:
            run_id = client.create_run(experiment, run_name="flood").info.run_id
            model_id = log_policy_model(tracking, run_id, checkpoint, trained["test"], True)
        return register_challenger(client, cfg, run_id, model_id, {}, "test").version

    def decision(version):
        return client.get_model_version(MODEL, version)

    def champion():
        return client.get_model_version_by_alias(MODEL, "champion").version

    first = register(flood)
    assert promote.main(args_for(root)) == 0
    assert champion() == first and decision(first).tags[DECISION_TAG] == "promoted"
    assert decision(first).tags["promotion.compared_with"] == "no champion"

    second = register(None, good.run_id, good.tags["model_id"])
    assert promote.main(args_for(root, "promote.violation_tolerance=1")) == 0
    assert champion() == second and decision(second).tags[DECISION_TAG] == "promoted"
    assert decision(second).tags["promotion.compared_with"] == f"v{first}"

    third = register(flood)
    assert promote.main(args_for(root, "promote.violation_tolerance=1")) == 0
    assert champion() == second  # not moved
    rejected = decision(third)
    assert rejected.tags[DECISION_TAG] == "rejected" and f"rejected against v{second}" in rejected.description
    assert client.get_model_version_by_alias(MODEL, "challenger").version == third

    runs = client.search_runs([experiment], "tags.`sidbp.kind` = 'promote'", order_by=["attributes.start_time ASC"])
    assert [r.data.tags["decision"] for r in runs] == ["promoted", "promoted", "rejected"]
    last = runs[-1].data.metrics
    assert last["challenger/avg_cost"] > last["champion/avg_cost"] and last["promoted"] == 0
    assert runs[1].data.metrics["challenger/avg_cost"] < runs[1].data.metrics["champion/avg_cost"]


def test_promoting_with_nothing_to_compare_is_a_config_error(tmp_path):
    from jobs import promote
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="has no @challenger"):
        promote.main(args_for(tmp_path))


def row(cost, rate_in=0.0, rate_out=0.0):
    return pd.Series({"avg_cost": cost, "avg_reward": -cost, "violation_rate_in": rate_in,
                      "violation_rate_out": rate_out})


@pytest.mark.parametrize("challenger, margin, tolerance, promoted", [
    (row(9.0), 0.05, 0.0, True),                    # 10% cheaper, margin 5%
    (row(9.8), 0.05, 0.0, False),                   # 2% cheaper: within the margin
    (row(11.0), 0.0, 0.0, False),                   # dearer
    (row(9.0, rate_out=0.02), 0.05, 0.0, False),    # cheaper, but violates more
    (row(9.0, rate_out=0.02), 0.05, 0.02, True),    # ... within the tolerance
    (row(9.0, rate_in=0.011), 0.05, 0.01, False),   # ... beyond it
])
def test_decide_weighs_the_objective_margin_and_the_violation_rates(challenger, margin, tolerance, promoted):
    champion = row(10.0, rate_in=0.0, rate_out=0.0)
    for objective in ("cost", "reward"):
        got = decide(champion, challenger, objective, margin, tolerance)
        assert got.promote is promoted
        assert got.change == pytest.approx((10.0 - challenger.avg_cost) / 10.0)
        assert len(got.reasons) == 3


def test_the_readme_commands_from_a_sweep_to_orders_parse():
    """The README's "From a sweep to tomorrow's orders" commands: each job's arguments load
    as a config, the served model is the one those jobs register and promote, and the
    serve command uses the flags the serving test runs with."""
    import importlib
    import re
    import shlex

    from pipeline.adapters.registry import registered_model_name
    from pipeline.config import PROJECT_ROOT, load_config

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## From a sweep to tomorrow's orders", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    jobs = [c[c.index("-m") + 1:] for c in commands if "-m" in c and c[c.index("-m") + 1].startswith("jobs.")]
    assert [j[0] for j in jobs] == ["jobs.sweep", "jobs.promote", "jobs.recommend"]
    names = set()
    for job, *args in jobs:
        assert callable(importlib.import_module(job).main)
        names.add(registered_model_name(load_config(args)))
    serve = next(c for c in commands if "serve" in c)
    assert serve[serve.index("-m") + 1] == f"models:/{names.pop()}@champion" and not names
    assert serve[serve.index("--env-manager") + 1] == "local" and "127.0.0.1" in serve
    assert ["make", "ui"] in commands and "\nui:" in (PROJECT_ROOT / "Makefile").read_text()
