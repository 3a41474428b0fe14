"""Violation maps and the seed scatter: the violating share of a slice is what the policy's
slopes say, the figures have one panel per policy and product (or problem), and the
scatter plots each policy's cost relative to the plain policy of its seed."""
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_batch
from pipeline.core.policy import demand_scale
from pipeline.core.problems import get_problem
from pipeline.reporting.plots import seed_scatter, slice_states, slice_violation_share, violation_map

LOST_SALES = get_problem("lost_sales", {})
PROPS = LOST_SALES.default_properties(2)  # -1 <= slopes <= 0, d/dpipeline_1 <= d/don_hand
START = 40


def batch(n=3, periods=60, lead_time=1):
    rng = np.random.default_rng(0)
    return make_batch(rng.poisson(5.0, size=(n, periods)) * np.arange(1, n + 1)[:, None], lead_time=lead_time)


class Linear:
    """Order ``c - a0 x0 - a1 x1`` (no floor at 0), plus ``bend`` x (x0 - ``kink`` x mean demand)
    above that point: the slope in x0 turns from -a0 to bend - a0 there."""

    def __init__(self, a0, a1, c=30.0, kink=None, bend=0.0):
        self.a0, self.a1, self.c, self.kink, self.bend = a0, a1, c, kink, bend

    def prepare(self, batch, start, horizon):
        return demand_scale(batch, start)

    def act(self, ctx, t, state):
        q = self.c - self.a0 * state[:, 0] - self.a1 * state[:, 1]
        if self.kink is not None:
            q = q + self.bend * torch.relu(state[:, 0] - self.kink * ctx)
        return q


class OrderRemoval:
    """Removal problem, one-entry state: order ``relu(c - x / 2)`` (valid), removal
    ``slope x relu(x - kink x mean demand)`` (violates its bound <= 1 above the kink when slope > 1)."""

    def __init__(self, slope, kink=4.1, c=20.0):
        self.slope, self.kink, self.c = slope, kink, c

    def prepare(self, batch, start, horizon):
        return demand_scale(batch, start)

    def act(self, ctx, t, state):
        x = state[:, 0]
        return torch.stack([torch.relu(self.c - 0.5 * x), self.slope * torch.relu(x - self.kink * ctx)], dim=1)


def test_slice_runs_from_zero_or_a_backlog_to_a_multiple_of_mean_demand():
    b = batch()
    scale = demand_scale(b, START)
    coords, state = slice_states(LOST_SALES, b, START, 3, 2, multiple=8.0, grid=5)
    assert len(coords) == 2 and state.shape == (25, 3)
    assert torch.allclose(coords[0], torch.linspace(0, 8 * float(scale[2]), 5))
    assert torch.equal(state[:, 2], torch.zeros(25))
    assert torch.equal(state[7, :2], torch.stack([coords[0][1], coords[1][2]]))  # entry 0 varies slowest
    dual = get_problem("dual_sourcing", {})
    assert dual.state_names(2)[0] == "net_inventory"
    coords, _ = slice_states(dual, b, START, 2, 0, multiple=8.0, grid=5)
    assert float(coords[0][0]) == pytest.approx(-4 * float(scale[0]))  # a backlog down to half the multiple
    assert float(coords[1][0]) == 0.0 and float(coords[1][-1]) == pytest.approx(8 * float(scale[0]))
    coords, state = slice_states(get_problem("removal", {}), b, START, 1, 0, grid=7)
    assert len(coords) == 1 and state.shape == (7, 1)


def test_share_is_all_or_nothing_for_linear_policies():
    b = batch()
    # slope -2 in pipeline_1 breaks the bound -1 everywhere
    assert slice_violation_share(Linear(0.5, 2.0), LOST_SALES, PROPS, b, START, 2, grid=11) == 1.0
    # -1 <= -0.75 <= -0.5 <= 0: every property holds everywhere
    assert slice_violation_share(Linear(0.5, 0.75), LOST_SALES, PROPS, b, START, 2, grid=11) == 0.0
    # ordering only: slope in pipeline_1 (-0.25) above the one in on hand (-0.5)
    assert slice_violation_share(Linear(0.5, 0.25), LOST_SALES, PROPS, b, START, 2, grid=11) == 1.0
    assert slice_violation_share(Linear(0.5, 0.25), LOST_SALES, PROPS[:2], b, START, 2, grid=11) == 0.0


def test_share_is_the_half_of_the_slice_past_the_kink():
    b, grid = batch(), 41
    # slope in on hand -0.5 below 4 x mean demand, +0.5 above (breaks <= 0): half of 0 .. 8 x mean
    kinked = Linear(0.5, 0.75, kink=4.0, bend=1.0)
    share = slice_violation_share(kinked, LOST_SALES, PROPS, b, START, 2, grid=grid)
    assert abs(share - 0.5) <= 1 / (grid - 1)
    # past 6 x mean demand: a quarter
    share = slice_violation_share(Linear(0.5, 0.75, kink=6.0, bend=1.0), LOST_SALES, PROPS, b, START, 2, grid=grid)
    assert abs(share - 0.25) <= 1 / (grid - 1)


def hatched_sets(ax):
    """The hatched filled contours of a panel (a ``ContourSet`` keeps one hatch per level)."""
    return [c for c in ax.collections if any(getattr(c, "hatches", None) or [c.get_hatch()])]


def test_violation_map_has_a_panel_per_policy_and_product_and_hatches_the_violations():
    b, grid = batch(n=4), 21
    policies = {"plain": Linear(0.5, 0.75, kink=4.1, bend=1.0), "penalized": Linear(0.5, 0.75),
                "by_construction": Linear(0.25, 0.5)}
    fig = violation_map(policies, LOST_SALES, PROPS, b, START, 2, products=3, grid=grid)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 * 3 and len(fig.axes) - len(panels) == 3  # 3 policies x 3 products, a colour bar each
    assert [panels[3 * i].get_ylabel() for i in range(3)] == [f"{n}\npipeline_1" for n in policies]
    assert panels[6].get_xlabel() == "on_hand"
    scale = demand_scale(b, START)
    for j, row in enumerate([0, 2, 3]):  # spread_sample of 3 out of 4
        plain, penalized = panels[j], panels[3 + j]
        hatched = hatched_sets(plain)
        assert len(hatched) == 1 and not hatched_sets(penalized)
        xs = np.concatenate([p.vertices[:, 0] for p in hatched[0].get_paths()])
        step = 8 * float(scale[row]) / (grid - 1)
        assert xs.min() >= 4 * float(scale[row]) - step  # the hatching lies past the kink only
        assert plain.texts[0].get_text() == "violates in 48% of the slice"  # 10 of 21 on-hand values
        assert penalized.texts[0].get_text() == "violates in 0% of the slice"
        assert abs(plain.get_xlim()[1] - 8 * float(scale[row])) < 1e-3 * float(scale[row])


def test_violation_map_draws_lines_for_a_one_entry_state():
    b, grid = batch(n=2, lead_time=0), 17
    removal = get_problem("removal", {})
    props = removal.default_properties(1)
    policies = {"plain": OrderRemoval(2.0), "penalized": OrderRemoval(1.0)}
    fig = violation_map(policies, removal, props, b, START, 1, products=2, grid=grid)
    assert len(fig.axes) == 2 * 2  # no colour bars
    scale = demand_scale(b, START)
    for j in range(2):
        plain, penalized = fig.axes[j], fig.axes[2 + j]
        for ax, pol in ((plain, policies["plain"]), (penalized, policies["penalized"])):
            assert [line.get_label() for line in ax.lines] == ["order", "removal"]
            x = torch.as_tensor(ax.lines[1].get_xdata())
            assert float(x[-1]) == pytest.approx(8 * float(scale[j]), rel=1e-5)
            want = pol.act(scale[[j] * grid], 0, x[:, None].float())
            assert np.allclose(ax.lines[1].get_ydata(), want[:, 1].numpy(), atol=1e-4)
        shaded = [p for p in plain.patches]
        assert len(shaded) == 1 and not penalized.patches  # one red stretch, from just past the kink
        left = shaded[0].get_x()
        step = 8 * float(scale[j]) / (grid - 1)
        assert 4 * float(scale[j]) <= left <= 4 * float(scale[j]) + step
    assert fig.axes[0].get_ylabel() == "plain\naction" and fig.axes[2].get_xlabel() == "on_hand"


def seed_table():
    rows = []
    for problem, cost in (("lost_sales", 10.0), ("removal", 20.0)):
        for seed in range(5):
            plain = cost + seed
            for policy, extra, v_in, v_out in (("plain", 0.0, 0.3, 0.6), ("penalized", 0.02, 0.01, 0.002),
                                               ("by_construction", 0.05 * (seed - 2), 0.0, 0.0)):
                for scenario, shift in (("nominal", 0.0), ("up", 5.0)):
                    rows.append({"problem": problem, "seed": seed, "policy": policy, "scenario": scenario,
                                 "avg_cost": plain * (1 + extra) + shift, "violation_in": v_in,
                                 "violation_out": v_out})
    return pd.DataFrame(rows)


def test_seed_scatter_plots_cost_relative_to_plain_per_seed():
    fig = seed_scatter(seed_table())
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["lost_sales", "removal"]
    for ax in fig.axes:
        assert ax.get_xscale() == "symlog"
        points = {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}
        assert list(points) == ["plain", "penalized", "by_construction"]
        assert all(len(p) == 5 for p in points.values())  # one per seed, nominal only
        assert np.allclose(points["plain"][:, 1], 0.0) and np.allclose(points["plain"][:, 0], 60.0)
        assert np.allclose(points["penalized"][:, 1], 2.0) and np.allclose(points["penalized"][:, 0], 1.0)
        assert np.allclose(points["by_construction"][:, 1], [-10.0, -5.0, 0.0, 5.0, 10.0])
        assert np.allclose(points["by_construction"][:, 0], 0.0)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(points)
