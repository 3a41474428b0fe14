"""jobs.sipn: the study's table over seeds (its interval and targets against numbers worked by
hand), and one tiny study end to end on Ray: every seed, policy and scenario in sipn.csv, the
structured policy without violations, the docs section rendered from the table."""
import math
import os

import pandas as pd
import pytest

from pipeline.studies.sipn_study import COLUMNS, interval, public, store, summarize


def frame(costs: dict, violations: dict | None = None) -> pd.DataFrame:
    """``costs``: (policy, scenario) -> a cost per seed."""
    rows = []
    for (policy, scenario), values in costs.items():
        for seed, cost in enumerate(values):
            v = (violations or {}).get(policy, 0.0)
            rows.append(dict(problem="lost_sales", seed=seed, policy=policy, scenario=scenario, avg_cost=cost,
                             violation_in=v, violation_out=v))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_the_interval_is_the_student_t_interval_over_seeds():
    mean, low, high = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4 df) x s / sqrt(n), s^2 = 2.5
    assert mean == 3.0 and low == pytest.approx(3.0 - half) and high == pytest.approx(3.0 + half)
    assert math.isnan(interval([2.0])[1])


def test_summary_compares_each_policy_with_the_plain_network_of_the_same_seed():
    costs = {("plain", "nominal"): [10.0, 20.0, 10.0, 20.0, 10.0],
             ("penalized", "nominal"): [10.1, 20.2, 10.1, 20.2, 10.1],         # +1% on every seed
             ("by_construction", "nominal"): [10.0, 20.0, 10.0, 20.0, 10.0],   # 0% on every seed
             ("plain", "down"): [5.0] * 5, ("penalized", "down"): [4.0] * 5, ("by_construction", "down"): [6.0] * 5,
             ("plain", "up"): [8.0] * 5, ("penalized", "up"): [9.0] * 5, ("by_construction", "up"): [7.0] * 5,
             ("plain", "spike"): [7.0] * 5, ("penalized", "spike"): [6.0] * 5,
             ("by_construction", "spike"): [8.0] * 5}
    spent = pd.DataFrame({"problem": "lost_sales", "seed": 0, "policy": ["plain", "penalized", "by_construction"],
                          "train_seconds": [10.0, 12.0, 15.0], "epochs": 2})
    s = summarize(frame(costs, {"plain": 1.0, "penalized": 0.004}), spent).set_index("policy")
    assert s.loc["penalized", "_mean"] == pytest.approx(1.0) and s.loc["penalized", "_high"] == pytest.approx(1.0)
    assert s.loc["penalized", "nominal cost vs plain"] == "+1.00% [+1.00, +1.00]"
    # shocks: 4 + 9 + 6 = 19 against 5 + 8 + 7 = 20, lower in down and spike
    assert s.loc["penalized", "_shock"] == pytest.approx(-0.05) and s.loc["penalized", "_wins"] == 2
    assert s.loc["penalized", "lower cost under"] == "2 of 3 (down, spike)"
    assert s.loc["by_construction", "_wins"] == 1 and s.loc["by_construction", "_shock"] == pytest.approx(0.05)
    assert s.loc["penalized", "_viol"] == 0.004 and s.loc["by_construction", "_viol"] == 0.0
    assert s.loc["by_construction", "train s (plain)"] == "15 (10)"
    shown = public(s.reset_index()).set_index("policy")
    assert not any(c.startswith("_") for c in shown.columns)
    assert shown.loc["penalized", "targets"] == ("cost <= +0.2% NO, violations <= 0.5% yes, "
                                                 "shocks: mean <= plain yes, shocks: lower in most yes")
    assert shown.loc["by_construction", "targets"] == ("cost <= +0.2% yes, violations <= 0.5% yes, "
                                                       "shocks: mean <= plain NO, shocks: lower in most NO")


def test_store_replaces_one_problems_rows_and_keeps_the_others(tmp_path):
    path = tmp_path / "sipn.csv"
    a = frame({("plain", "nominal"): [1.0, 2.0]})
    b = a.assign(problem="removal")
    store(a, path, "lost_sales")
    store(b, path, "removal")
    again = store(a.assign(avg_cost=a.avg_cost + 10), path, "lost_sales")
    assert len(again) == 4 and list(again.columns) == COLUMNS
    assert sorted(again[again.problem == "lost_sales"].avg_cost) == [11.0, 12.0]
    assert pd.read_csv(path).equals(again)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, ray_session):
    from jobs.sipn import main

    root = tmp_path_factory.mktemp("sipn")
    args = ["experiment=smoke", "name=sipn-smoke", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            "mlflow.experiment=test-sipn", "sipn.seeds=[3,4]", "penalty.weights=[1.0]", "penalty.shock_share=0.5",
            "data.num_products=30", "train.epochs=1", "eval.plot_products=2", "robustness.shocks=[down]",
            "robustness.initial_multiples=[6.0]", "train.num_workers=0"]
    here = os.getcwd()
    os.chdir(root)  # results, docs and runs land beside the study, as for a user in their own folder
    try:
        assert main(args) == 0
    finally:
        os.chdir(here)
    return root


def test_the_study_records_every_seed_policy_and_scenario(tiny_study):
    table = pd.read_csv(tiny_study / "benchmarks" / "results" / "sipn.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 3 * 3 and set(table.seed) == {3, 4}
    assert set(table.policy) == {"plain", "penalized", "by_construction"}
    assert list(dict.fromkeys(table.scenario)) == ["nominal", "down", "start_6x"]
    structured = table[table.policy == "by_construction"]
    assert (structured.violation_in == 0).all() and (structured.violation_out == 0).all()
    assert table.avg_cost.notna().all() and (table.avg_cost > 0).all()
    spent = pd.read_csv(tiny_study / "benchmarks" / "results" / "sipn_time.csv")
    assert len(spent) == 6 and (spent.train_seconds > 0).all()


def test_the_docs_section_is_rendered_from_the_table(tiny_study):
    table = pd.read_csv(tiny_study / "benchmarks" / "results" / "sipn.csv")
    doc = (tiny_study / "docs" / "sipn.md").read_text()
    nominal = table[table.scenario == "nominal"].pivot(index="seed", columns="policy", values="avg_cost")
    mean, low, high = interval(100 * (nominal.penalized - nominal.plain) / nominal.plain)
    assert f"{mean:+.2f}% [{low:+.2f}, {high:+.2f}]" in doc
    for cost in nominal.by_construction:
        assert f"{cost:.4f}" in doc  # every seed's cost is in the per-seed table
    assert "<!-- sipn:lost_sales -->" in doc and "<!-- sipn:overview -->" in doc
    assert (tiny_study / "docs" / "figures" / "sipn_lost_sales.png").stat().st_size > 10_000
    assert (tiny_study / "docs" / "figures" / "sipn_seeds.png").stat().st_size > 10_000


def test_every_training_run_is_nested_under_the_study(tiny_study):
    from mlflow.tracking import MlflowClient

    from pipeline.adapters.tracking import PARENT_TAG, RUN_NAME_TAG

    client = MlflowClient(f"sqlite:///{tiny_study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("test-sipn")
    study = client.search_runs([exp.experiment_id], f"tags.`{RUN_NAME_TAG}` = 'sipn-smoke'")[0]
    children = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{study.info.run_id}'")
    names = sorted(r.data.tags[RUN_NAME_TAG] for r in children)
    assert names == sorted(f"sipn-smoke-s{s}-{p}" for s in (3, 4) for p in ("plain", "penalized", "by_construction"))
    assert all(r.data.params["policy.structure"] == ("by_construction" if r.data.tags[RUN_NAME_TAG].endswith(
        "by_construction") else "free") for r in children)
