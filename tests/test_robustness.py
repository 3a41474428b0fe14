"""Robustness scenarios: the shocks change exactly the periods they say, off-distribution
starts are the stated multiple of mean demand, and the scenario table scores what it says."""
import numpy as np
import torch

from conftest import make_batch
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.core.problems import get_problem
from pipeline.core.batch import shocked
from pipeline.core.robustness import off_distribution_state, robustness_table, scenarios

PROBLEM = get_problem("lost_sales")


def batch(n=3, periods=120, lead_time=0):
    rng = np.random.default_rng(0)
    return make_batch(rng.poisson(5.0, size=(n, periods)), lead_time=lead_time)


def test_shocks_scale_demand_from_the_shock_on_or_in_one_period():
    b = batch()
    up = shocked(b, "up", 50, 2.0, discrete=True)
    down = shocked(b, "down", 50, 0.3, discrete=True)
    spike = shocked(b, "spike", 50, 4.0, discrete=True)
    assert torch.equal(up.demand[:, :50], b.demand[:, :50]) and torch.equal(up.demand[:, 50:], 2 * b.demand[:, 50:])
    assert torch.equal(down.demand[:, 50:], torch.round(0.3 * b.demand[:, 50:]))
    assert torch.equal(spike.demand[:, 50], 4 * b.demand[:, 50])
    assert torch.equal(spike.demand[:, 51:], b.demand[:, 51:]) and torch.equal(spike.demand[:, :50], b.demand[:, :50])
    assert torch.equal(b.demand, batch().demand)  # the original is untouched


def test_off_distribution_start_is_a_multiple_of_mean_demand_in_every_entry():
    b = batch(lead_time=3)
    state = off_distribution_state(PROBLEM, b, 60, 3, 6.0)
    mean = b.demand[:, :60].mean(dim=1)
    assert state.shape == (3, 3)
    assert torch.allclose(state, 6.0 * mean[:, None].expand(3, 3))


class Constant:
    """Orders a fixed amount every period (no structure: not a network)."""

    def __init__(self, q):
        self.q = q

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return torch.full((state.shape[0],), float(self.q))


def test_scenario_table_scores_the_same_periods_and_shows_the_shock():
    cfg = load_config(["experiment=smoke", "robustness.shocks=[up,down,spike]", "robustness.initial_multiples=[6.0]"])
    b = batch(n=4, periods=cfg.data.periods)
    names = [s["scenario"] for s in scenarios(cfg, PROBLEM, b, 1)]
    assert names == ["nominal", "up", "down", "spike", "start_6x"]
    table = robustness_table(cfg, PROBLEM, {"five": Constant(5)}, set(), b, 1)
    cost = table.set_index("scenario").avg_cost
    # ordering 5 a period against Poisson(5) demand (L = 0, h = 1, p = 4): doubled demand
    # loses sales, a third of it leaves stock piling up; both cost more than nominal
    assert cost["up"] > cost["nominal"] and cost["down"] > cost["nominal"]
    # starting with 6 periods of stock (30 units), a constant order at mean demand keeps
    # about that much on hand: holding cost of at least 25 a period, against 14 from empty
    assert cost["start_6x"] > 25 > cost["nominal"]
    assert "violation_rate_in" not in table.columns  # no network in this table


def test_scenario_table_gives_violation_rates_for_networks():
    from pipeline.core.policy import OrderPolicy

    cfg = load_config(["experiment=smoke", "policy.kind=mlp", "robustness.shocks=[spike]",
                       "robustness.initial_multiples=[]"])
    torch.manual_seed(0)
    net = OrderPolicy(1, kind="mlp")
    b = batch(n=4, periods=cfg.data.periods)
    table = robustness_table(cfg, PROBLEM, {"net": net}, {"net"}, b, 1)
    assert list(table.scenario) == ["nominal", "spike"]
    assert table[["violation_rate_in", "violation_rate_out"]].notna().all().all()
    assert ((table.violation_rate_out >= 0) & (table.violation_rate_out <= 1)).all()


def test_docs_sections_are_replaced_in_place_and_the_header_kept_current(tmp_path):
    from pipeline.studies.sipn_study import write_section

    doc = tmp_path / "sipn.md"
    header = (PROJECT_ROOT / "docs" / "sipn.md").read_text().split("<!-- sipn:")[0]
    notes = "## The study\n\nProse after the sections.\n"
    doc.write_text(header + notes)
    write_section(doc, "a", "first A")
    write_section(doc, "b", "first B")
    write_section(doc, "a", "second A")
    text = doc.read_text()
    assert header.startswith("# Structure-informed") and text.startswith(header)
    assert "second A" in text and "first A" not in text and "first B" in text
    assert text.index("second A") < text.index("first B")  # a section keeps its place
    assert text.index(notes) < text.index("second A") and text.count(notes) == 1  # the prose is the file's own
    new = tmp_path / "new.md"
    write_section(new, "a", "first A")
    assert new.read_text().startswith("# Structure-informed") and "first A" in new.read_text()
