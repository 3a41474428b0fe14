"""The command-line interface of every job (help; a bad argument is one line on stderr
and exit code 2), and batch inference (``pipeline.adapters.batch_inference``) against the simulator."""
import importlib
import sys

import numpy as np
import pytest
import torch

from jobs import _cli
from pipeline.core.batch import batch_from_columns
from pipeline.data.synthetic import synthetic_population
from pipeline.errors import DataError
from pipeline.core.policy import OrderPolicy
from pipeline.core.problems import get_problem
from pipeline.adapters.batch_inference import Recommender, next_actions, simulated_state
from pipeline.core.rollout import rollout

JOBS = ("train", "sweep", "evaluate", "recommend", "compare", "prepare_data", "benchmark", "favorita", "sipn",
        "structure")


def run_job(name, args, monkeypatch, capsys):
    module = importlib.import_module(f"jobs.{name}")
    monkeypatch.setattr(sys, "argv", [f"jobs/{name}.py", *args])
    with pytest.raises(SystemExit) as exit_:
        _cli.run(name, module.main)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.mark.parametrize("name", JOBS)
def test_help_shows_the_jobs_own_usage(name, monkeypatch, capsys):
    code, out, _ = run_job(name, ["--help"], monkeypatch, capsys)
    assert code == 0
    assert f"python -m jobs.{name}" in out and "experiment=NAME" in out


@pytest.mark.parametrize("name", JOBS)
@pytest.mark.parametrize("bad, message", [
    (["train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["problem.discount=1.5"], "problem.discount must be in (0, 1], got 1.5"),
    (["experiment=nope"], "unknown experiment 'nope'; known: "),
    (["recommend.state=guess"], "recommend.state must be one of columns, simulate, got 'guess'"),
    (["epochs"], "expected key=value, got 'epochs'"),
])
def test_a_bad_argument_is_one_line_and_exit_code_2(name, bad, message, monkeypatch, capsys):
    code, out, err = run_job(name, bad, monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_evaluate_and_recommend_name_a_model_that_is_not_there(tmp_path, monkeypatch, capsys):
    uri = f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"
    for name in ("evaluate", "recommend"):
        code, _, err = run_job(name, [uri, f"model.uri={tmp_path / 'none.pt'}"], monkeypatch, capsys)
        assert code == 2 and "none.pt': no checkpoint file there" in err and err.count("\n") == 1
        code, _, err = run_job(name, [uri], monkeypatch, capsys)  # the default: the champion, none registered
        last = err.strip().splitlines()[-1]  # after MLflow's own lines creating the new database
        assert code == 2 and last.startswith("config error: model.uri 'models:/sidbp-lost_sales@champion' not found")


def test_compare_names_the_experiments_it_knows(tmp_path, monkeypatch, capsys):
    code, _, err = run_job("compare", ["mlflow_experiment=nope", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"],
                           monkeypatch, capsys)
    assert code == 2 and "mlflow_experiment 'nope' not found" in err and "known: Default" in err


# ---------------------------------------------------------------- batch inference

@pytest.fixture(scope="module")
def population():
    from pipeline.config import load_config

    cfg = load_config(["data.num_products=16", "data.lead_time_range=[0,3]"])
    return synthetic_population(cfg.data, 3)


def product_columns(cols, periods):
    out = {k: v for k, v in cols.items() if k != "demand"}
    out["demand"] = cols["demand"][:, :periods]
    return out


def test_recommendations_are_the_orders_the_simulator_takes_next(population, tmp_path):
    """After T periods of history: the simulated state is the state a rollout over T+1
    periods is in at period T, and the recommended order is the simulator's decision at
    period T from that state (demand up to T-1 seen, none of period T); from state
    columns, the policy's action in the given state."""
    torch.manual_seed(0)
    problem, width, T = get_problem("lost_sales"), 3, 50
    policy = OrderPolicy(width, kind="cnn", hidden=(16, 16)).eval()
    longer = batch_from_columns(product_columns(population, T + 1))
    start = policy.window
    with torch.no_grad():
        traj = rollout(problem, policy, longer, start, T + 1 - start, width, round_actions=True, record_states=True)
    cols = product_columns(population, T)
    batch = batch_from_columns(cols)
    state = simulated_state(problem, policy, batch, width, round_actions=True)
    assert torch.equal(state, traj.states[:, -1])
    orders = next_actions(problem, policy, batch, width, state, round_actions=True)
    with torch.no_grad():  # the simulator's decision at period T from that state (scaled by the history to T)
        step = rollout(problem, policy, longer, T, 1, width, round_actions=True, initial_state=state)
    assert torch.equal(orders, step.actions[:, 0]) and torch.equal(orders, orders.round())
    assert orders.sum() > 0

    from pipeline.adapters import checkpoint as ckpt
    from pipeline.config import load_config

    cfg = load_config(["data.lead_time_range=[0,3]", "policy.hidden=[16,16]"])
    path = ckpt.save(tmp_path / "checkpoint.pt", policy, None, 4, cfg, width)
    names = problem.state_names(width)
    given = {**cols, **{n: np.arange(16, dtype=float) + j for j, n in enumerate(names)}}
    rec = Recommender(str(path), "file:x", str(tmp_path / "out"), "columns", True, "test.parquet")
    assert rec(given)["rows"].tolist() == [16]
    import pandas as pd

    out = pd.read_parquet(tmp_path / "out")
    expected = next_actions(problem, policy, batch, width, torch.tensor(np.stack([given[n] for n in names], 1),
                                                                        dtype=torch.float32), True)
    assert out.columns.tolist() == ["product_id", "period", "lead_time", *names, "order", "state_source",
                                    "model_version"]
    assert np.array_equal(out["order"].to_numpy(), expected[:, 0].numpy())
    assert (out.period == T).all() and (out.model_version == "file:x").all()
    assert np.array_equal(out.product_id.to_numpy(), cols["product_id"])

    with pytest.raises(DataError, match="no state column pipeline_1, pipeline_2 .*recommend.state=simulate"):
        rec({**cols, "on_hand": np.zeros(16)})
    with pytest.raises(DataError, match="2 rows with a negative or non-finite state"):
        bad = {**given, "on_hand": np.r_[-1.0, np.nan, np.zeros(14)]}
        rec(bad)
    short = product_columns(population, 20)
    with pytest.raises(DataError, match="histories of 20 periods; the policy needs more than its 32-period window"):
        rec({**short, **{n: np.zeros(16) for n in names}})


def test_progress_lines_give_the_rate_and_the_time_left(monkeypatch):
    from pipeline.reporting import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    assert progress.eta(3, 20, 970.0, "instances") == "elapsed 30.0s, 6.00 instances/min, about 2m50s left"
    assert progress.eta(500, 1000, 998.0, "products") == "elapsed 2.0s, 250.0 products/s, about 2.0s left"
    assert progress.eta(0, 5, 990.0, "trials") == "elapsed 10.0s, 0.00 trials/min, about ? left"
    assert progress.clock(3725) == "1h02m" and progress.clock(187) == "3m07s"
