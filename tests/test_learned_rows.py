"""The learned row of a benchmark suite: the paired gap against known answers, the population and
the state embedding, and one tiny suite end to end through the training path."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from pipeline.core.batch import batch_from_columns
from pipeline.core.baselines import BaseStockPolicy, newsvendor_cost, newsvendor_levels
from pipeline.core.evaluation import paired_gap, product_costs
from pipeline.core.problems.lost_sales import LostSales
from pipeline.studies.suites import SUITES
from pipeline.studies.suites import learned
from pipeline.studies.suites.lost_sales_suite import product as lost_sales_product


def test_paired_gap_of_known_totals_and_identical_paths():
    gap, se = paired_gap(torch.tensor([2.0, 4.0, 6.0]), torch.tensor([1.0, 2.0, 3.0]))
    assert gap == pytest.approx(100.0) and se == pytest.approx(0.0)
    same = torch.tensor([3.0, 5.0, 4.0, 7.0])
    assert paired_gap(same, same) == (0.0, 0.0)
    gap, se = paired_gap(torch.tensor([1.1, 2.0]), torch.tensor([1.0, 2.0]))  # 3.1 / 3.0
    assert gap == pytest.approx(100 / 30)
    # d = cost - ratio x reference = (1.1 - 31/30, 2 - 62/30) = (1/15, -1/15): sd sqrt(2)/15
    assert se == pytest.approx(100 * (2 ** 0.5 / 15) / (2 ** 0.5 * 1.5))


def test_paired_gap_of_two_base_stock_levels_matches_the_exact_newsvendor_costs():
    """Lead time 0: a base-stock level's exact cost per period is the newsvendor's, so the gap
    between two levels on the same simulated paths must match the exact one within its
    standard error."""
    one = lost_sales_product(9.0, 0)
    best = newsvendor_levels(one, "cost")
    exact = newsvendor_cost(one, torch.cat([best, best + 2]))
    truth = 100 * float(exact[1] / exact[0] - 1)
    rng = np.random.default_rng(3)
    batch = batch_from_columns(learned.population([SUITES["lost_sales"].dp_instance({"p": 9, "L": 0})],
                                                          3000, 301, rng))
    problem = LostSales()

    def costs(level: float) -> torch.Tensor:
        policy = BaseStockPolicy(problem, torch.full((batch.size,), level))
        return product_costs(problem, policy, batch, 1, 300, 0, 1, True)

    gap, se = paired_gap(costs(float(best) + 2), costs(float(best)))
    assert 0 < se < 0.5
    assert abs(gap - truth) < 4 * se
    discounted = product_costs(problem, BaseStockPolicy(problem, torch.full((batch.size,), float(best))), batch,
                               1, 300, 0, 1, True, discount=0.9)
    assert float(discounted.mean()) == pytest.approx(float(exact[0]), rel=0.02)  # (1 - g) sum g^t E c_t


def test_population_spans_the_instances_with_their_parameters_as_columns():
    suite = SUITES["perishable"]
    cases = [suite.dp_instance(i) for i in suite.instances[:4] + suite.instances[-1:]]
    params, varying = learned.population_params([c.problem for c in cases])
    assert params["shelf_life"] == 5 and set(varying) == {"shelf_life", "issuing", "waste_cost"}
    cols = learned.population(cases, 10, 30, np.random.default_rng(0))
    assert len(cols["product_id"]) == 50 and cols["demand"].shape == (50, 30)
    instance = cols["product_id"] // learned.ID_STRIDE
    assert list(np.bincount(instance)) == [10] * 5
    assert set(cols["shelf_life"][instance == 4]) == {5} and set(cols["issuing"][instance == 1]) == {"lifo"}
    assert "true_mean" in cols and "mean" not in cols  # the law is kept for evaluation, never a parameter


def test_embed_places_entries_by_name():
    state = torch.tensor([[1.0, 2.0]])
    wide = learned.embed(state, ["stock_age_0", "stock_age_1"],
                         ["pipeline_1", "stock_age_0", "stock_age_1", "stock_age_2"])
    assert wide.tolist() == [[0.0, 1.0, 2.0, 0.0]]


def test_a_tiny_suite_end_to_end_beats_what_the_dp_calls_the_next_best(ray_session, tmp_path):
    """Two lost-sales instances, 1,000 products, a few hundred steps through Ray Train: the
    learned row's paired gap to the DP policy must be below the exact gap of the best
    base-stock policy (L = 1, +2.0%) and of the newsvendor level one unit off (L = 0)."""
    from pipeline.config import load_config
    from pipeline.core.heuristics import lost_sales_heuristics as heuristics

    instances = ({"p": 9, "L": 0}, {"p": 9, "L": 1})
    suite = dataclasses.replace(SUITES["lost_sales"], instances=instances)
    cfg = load_config(["learned=lost_sales", f"output_dir={tmp_path}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db",
                       "data.num_products=1000", "data.periods=200", "data.valid_fraction=0.1",
                       "train.epochs=6", "train.batch_size=128", "train.horizon=60", "train.warmup=10",
                       "train.cpus_per_worker=1", "eval.start=120", "eval.warmup=20",
                       "benchmark.eval_products=1000", "benchmark.eval_periods=300", "benchmark.eval_warmup=30"])
    exact = {"p=9;L=0": 4.2211, "p=9;L=1": 5.4382}
    table, info = learned.run(cfg, suite, exact)
    assert list(table.instance) == ["p=9;L=0", "p=9;L=1"] and set(table.policy) == {"learned"}
    assert (table.gap_se_pct <= 0.05).all()
    one = lost_sales_product(9.0, 0)
    level = newsvendor_levels(one, "cost")
    off_by_one = newsvendor_cost(one, torch.cat([level - 1, level + 1])).min() / newsvendor_cost(one, level)[0]
    gaps = table.set_index("instance").gap_pct
    assert gaps["p=9;L=0"] < 100 * float(off_by_one - 1)
    base_stock = heuristics.best_base_stock(heuristics.Instance.of(lost_sales_product(9.0, 1)))[1]
    assert gaps["p=9;L=1"] < 100 * (base_stock / exact["p=9;L=1"] - 1)
    assert table.avg_cost.tolist() == pytest.approx([exact[k] * (1 + gaps[k] / 100) for k in exact])
    assert len(info["curve"]) == 6 and info["curve"].valid_gap_pct.iloc[-1] < info["curve"].valid_gap_pct.iloc[0]


@pytest.mark.parametrize("name,picks", [("lost_sales", (0, 7)), ("perishable", (1, 5, 20)),
                                        ("dual_sourcing", (0, 8)), ("removal", (3, 4))])
def test_a_product_plays_its_own_instance_in_the_population_problem(name, picks):
    """The pairing the learned row rests on: one policy on the same paths costs the same in the
    population's problem (the suite's parameters as product columns, the widest state) as in
    the instance's own problem; a parameter left to the population constants would not."""
    from pipeline.core.problems import get_problem

    suite = SUITES[name]
    cells = [learned.Cell(suite.instances[i], suite.dp_instance(suite.instances[i]), None) for i in picks]
    params, _ = learned.population_params([c.case.problem for c in cells])
    problem = get_problem(suite.problem, params)
    width = problem.state_width(max(int(c.case.product.lead_time[0]) for c in cells))
    for cell in cells:
        batch, start = learned.evaluation_paths(cell, 50, 140, np.random.default_rng(1), torch.Generator().manual_seed(1))
        level = float(cell.case.product.true_mean[0]) * (int(cell.case.product.lead_time[0]) + 1.5)
        policy = BaseStockPolicy(problem, torch.full((batch.size,), level))
        wide = None if start is None else learned.embed(start, cell.case.problem.state_names(cell.width),
                                                         problem.state_names(width))
        mine = product_costs(cell.case.problem, policy, batch, 40, 100, 0, cell.width, True, start)
        theirs = product_costs(problem, policy, batch, 40, 100, 0, width, True, wide)
        assert torch.allclose(mine, theirs, rtol=1e-6), cell.instance


def test_the_job_adds_learned_rows_beside_the_exact_ones_and_checks_its_policies():
    import pandas as pd

    from jobs.benchmark import merge
    from pipeline.config import ConfigError, load_config
    from pipeline.studies.suites import COLUMNS

    exact = pd.DataFrame([["s", "p", i, pol, 1.0, 0.0] for i in ("a", "b") for pol in ("dp", "base_stock")],
                         columns=COLUMNS)
    rows = pd.DataFrame([{"suite": "s", "problem": "p", "instance": i, "policy": "learned", "avg_cost": 1.01,
                          "gap_pct": 1.0, "gap_se_pct": 0.01} for i in ("a", "b")])
    table = merge(exact, rows)
    assert list(zip(table.instance, table.policy)) == [("a", "dp"), ("a", "base_stock"), ("a", "learned"),
                                                       ("b", "dp"), ("b", "base_stock"), ("b", "learned")]
    assert table.gap_se_pct.isna().sum() == 4
    assert load_config(["suite=all", "benchmark.policies=[learned]"]).benchmark.policies == ["learned"]
    with pytest.raises(ConfigError, match="subset of dp, learned"):
        load_config(["suite=all", "benchmark.policies=[base_stock]"])
    with pytest.raises(ConfigError, match="max_se_pct"):
        load_config(["benchmark.max_se_pct=0"])


def test_rounded_training_rolls_out_whole_units_and_passes_the_gradient_straight_through():
    from pipeline.config import load_config
    from pipeline.core.policy import build_policy
    from pipeline.core.rollout import rollout
    from pipeline.core.training import TrainSpec, train_step

    problem = LostSales()
    cfg = load_config(["policy.kind=mlp", "train.round_actions=true", "train.horizon=20", "train.warmup=0"])
    spec = TrainSpec.from_config(cfg, problem, 2)
    assert spec.round_actions
    torch.manual_seed(0)
    policy = build_policy(cfg.policy, 2, problem)
    batch = learned.batch_from_columns(learned.population([SUITES["lost_sales"].dp_instance({"p": 9, "L": 2})], 16, 80,
                                                          np.random.default_rng(0)))
    traj = rollout(problem, policy, batch, 40, 20, 2, round_actions=True)
    assert traj.actions.requires_grad and torch.equal(traj.actions, torch.round(traj.actions))
    traj.cost.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in policy.parameters())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    assert math.isfinite(train_step(policy, optimizer, problem, batch, 40, spec)["loss"])
