"""The quantile forecaster and the predict-then-optimise order-up-to policies."""
import numpy as np
import pytest
import torch
from conftest import make_batch

from pipeline.core.forecast import (
    MovingAverageOrderUpTo,
    QuantileForecaster,
    QuantileOrderUpTo,
    fit_forecaster,
    forecast_metrics,
    moving_average_metrics,
    pinball_loss,
    quantile_at,
)
from pipeline.core.problems import get_problem
from pipeline.core.rollout import rollout

torch.set_num_threads(1)
PROBLEM = get_problem("lost_sales", {})


class StubForecast:
    """Known forecasts: value[b, t, k, q] = 10 * (k + 1) + 4 * q + b + t / 2 (t from 0 at start)."""

    quantiles = (0.5, 0.9)

    def __init__(self, horizons=3):
        self.horizons = horizons

    def predict(self, batch, start, horizon):
        b = torch.arange(batch.size, dtype=torch.float32)[:, None, None, None]
        t = torch.arange(horizon, dtype=torch.float32)[None, :, None, None]
        k = torch.arange(self.horizons, dtype=torch.float32)[None, None, :, None]
        q = torch.arange(2, dtype=torch.float32)[None, None, None, :]
        return (10 * (k + 1) + 4 * q + b + t / 2).expand(batch.size, horizon, self.horizons, 2).clone()


class ConstantForecast:
    """Quantiles 2 (level 0.5) and 4 (level 0.9) at every creation time and horizon."""

    quantiles = (0.5, 0.9)
    horizons = 1

    def predict(self, batch, start, horizon):
        return torch.tensor([2.0, 4.0]).expand(batch.size, horizon, 1, 2)


def test_pinball_loss_matches_hand_computation():
    levels = torch.tensor([0.1, 0.5, 0.9])
    loss = pinball_loss(torch.tensor([3.0]), torch.tensor([[1.0, 3.0, 5.0]]), levels)
    assert loss[0].tolist() == pytest.approx([0.2, 0.0, 0.2])  # 0.1*2, 0, (0.9-1)*(-2)
    loss = pinball_loss(torch.tensor([10.0, 0.0]), torch.tensor([[4.0], [4.0]]), torch.tensor([0.9]))
    assert loss[:, 0].tolist() == pytest.approx([5.4, 0.4])  # 0.9*6, 0.1*4


def test_quantile_interpolation_and_exact_levels():
    values = torch.tensor([[10.0, 20.0, 40.0], [1.0, 2.0, 3.0]])
    levels = [0.5, 0.8, 0.9]
    got = quantile_at(values, levels, torch.tensor([0.65, 0.9]))
    assert got.tolist() == pytest.approx([15.0, 3.0])
    assert quantile_at(values, levels, torch.tensor([0.8, 0.5]), interpolate=False).tolist() == [20.0, 1.0]
    with pytest.raises(ValueError, match="not among"):
        quantile_at(values, levels, torch.tensor([0.65, 0.8]), interpolate=False)
    with pytest.raises(ValueError, match="outside"):
        quantile_at(values, levels, torch.tensor([0.95, 0.8]))


def test_quantiles_are_monotone_in_the_level():
    torch.manual_seed(0)
    model = QuantileForecaster([0.05, 0.2, 0.5, 0.8, 0.95], horizons=3, n_features=2)
    demand = torch.poisson(torch.full((8, 40), 3.0))
    features = torch.randn(8, 42, 2)
    per_period, scale = model(demand, features, 5, 40)
    assert per_period.shape == (8, 35, 3, 5) and scale.shape == (8, 35)
    assert bool((per_period.diff(dim=3) > 0).all())
    with torch.no_grad():  # random weights: monotone by construction, not by training
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    per_period, _ = model(demand, features, 5, 40)
    assert bool((per_period.diff(dim=3) >= 0).all()) and per_period.std() > 1.0
    batch = make_batch(demand.numpy())
    batch.features = torch.randn(8, 40, 2)
    pred = model.predict(batch, 10, 30)
    assert pred.shape == (8, 30, 3, 5)
    assert bool((pred.diff(dim=3) >= 0).all()) and bool((pred >= 0).all())


def poisson_batch(seed, n=64, periods=80):
    rng = np.random.default_rng(seed)
    means = np.linspace(1.0, 20.0, n)
    return make_batch(rng.poisson(means[:, None], size=(n, periods))), means


def oracle_training_loss(batch, means, train_end, levels, horizons, min_history):
    """The training loss of the true Poisson quantiles (the best any forecaster can do)."""
    from scipy.stats import poisson

    from pipeline.core.forecast import cumulative_targets, expanding_scale

    t1 = train_end - horizons + 1
    y = cumulative_targets(batch.demand, min_history, t1, horizons).double()         # [B, T, K]
    k = torch.arange(1.0, horizons + 1, dtype=torch.float64)
    scale = expanding_scale(batch.demand)[:, min_history:t1, None].double() * k       # [B, T, K]
    true_q = torch.tensor(poisson.ppf(np.array(levels), (means[:, None] * k.numpy())[..., None]))
    return float(pinball_loss(y / scale, true_q[:, None] / scale[..., None],
                              torch.tensor(levels, dtype=torch.float64)).mean())


def test_forecaster_learns_and_is_calibrated_on_held_out_periods():
    batch, means = poisson_batch(0)
    levels = [0.1, 0.5, 0.9]
    model, history = fit_forecaster(batch, 60, levels, horizons=2, epochs=40, lr=1e-2, batch_size=64,
                                    min_history=8, seed=0)
    assert len(history) == 40
    oracle = oracle_training_loss(batch, means, 60, levels, 2, 8)
    assert oracle == pytest.approx(0.0779, abs=1e-4)
    assert history[0] > 1.3 * oracle and history[-1] < 1.15 * oracle  # from far above to near the floor
    _, again = fit_forecaster(batch, 60, levels, horizons=2, epochs=2, lr=1e-2, batch_size=64, seed=0)
    assert again == history[:2]  # deterministic given the seed
    for k in (1, 2):
        m = forecast_metrics(model, batch, 60, 80, levels, k)
        for q in (0.5, 0.9):
            assert abs(m[f"coverage_{q:g}"] - q) < 0.15, (k, m)
        # no worse than a 20-period moving average with normal quantiles
        assert m["mean_wql"] < 1.05 * moving_average_metrics(batch, 60, 80, levels, k, 20)["mean_wql"]


def test_forecaster_reads_the_known_future_features():
    rng = np.random.default_rng(0)
    promo = (rng.random((48, 80)) < 0.25).astype(np.float32)
    batch = make_batch(rng.poisson(np.where(promo > 0, 12.0, 4.0)))  # promotions triple demand
    batch.features = torch.tensor(promo)[..., None]
    model, _ = fit_forecaster(batch, 60, [0.5, 0.9], horizons=2, epochs=30, lr=1e-2, batch_size=48, seed=0)
    median = model.predict(batch, 60, 20)[:, :, 0, 0]  # horizon 1: the creation period itself
    on_promo = batch.features[:, 60:, 0] > 0
    assert 10.0 < median[on_promo].mean() < 14.0   # Poisson(12) median 12
    assert 3.0 < median[~on_promo].mean() < 5.0    # Poisson(4) median 4


def test_forecasts_use_no_future_demand():
    torch.manual_seed(1)
    model = QuantileForecaster([0.1, 0.5, 0.9], horizons=4, n_features=1).eval()
    demand = torch.poisson(torch.full((5, 50), 4.0))
    batch = make_batch(demand.numpy())
    batch.features = torch.randn(5, 50, 1)
    base = model.predict(batch, 10, 40)
    t = 25  # forecasts created at period t are index t - 10
    changed = demand.clone()
    changed[:, t:] = torch.poisson(torch.full((5, 50 - t), 9.0))
    other = model.predict(batch.with_demand(changed), 10, 40)
    assert torch.equal(other[:, :t - 10 + 1], base[:, :t - 10 + 1])
    assert not torch.allclose(other[:, t - 10 + 1], base[:, t - 10 + 1])  # t + 1 sees period t
    earlier = demand.clone()
    earlier[:, t - 1] += 7.0
    assert not torch.allclose(model.predict(batch.with_demand(earlier), 10, 40)[:, t - 10], base[:, t - 10])
    # a forecast depends on its creation time only, not on where the prediction window starts
    assert torch.allclose(model.predict(batch, t, 5)[:, 0], base[:, t - 10], atol=1e-6)


@pytest.mark.parametrize("lead_time", [0, 2])
@pytest.mark.parametrize("interpolate", [False, True])
def test_quantile_order_up_to_orders_level_minus_position(lead_time, interpolate):
    rng = np.random.default_rng(lead_time)
    batch = make_batch(rng.poisson(6.0, size=(3, 30)), lead_time=lead_time, h=1.0, p=9.0)  # fractile 0.9
    policy = QuantileOrderUpTo(PROBLEM, StubForecast(), "cost", interpolate=interpolate)
    traj = rollout(PROBLEM, policy, batch, 10, 15, width=max(1, lead_time), record_states=True)
    b = torch.arange(3.0)[:, None]
    t = torch.arange(15.0)[None, :]
    levels = 10 * (lead_time + 1) + 4 + b + t / 2  # horizon L + 1, the 0.9 quantile
    assert torch.allclose(traj.context, levels)
    position = traj.states.sum(dim=2)
    assert torch.allclose(traj.orders, torch.relu(levels - position))
    assert traj.orders[:, 0].tolist() == levels[:, 0].tolist()  # starts empty
    assert bool((traj.orders[:, 1:] > 0).any())


def test_quantile_order_up_to_interpolates_between_levels():
    batch = make_batch(np.full((2, 20), 5.0), h=1.0, p=3.0)  # fractile 0.75: 5/8 of the way 0.5 -> 0.9
    levels = QuantileOrderUpTo(PROBLEM, StubForecast(), "cost").prepare(batch, 5, 4)
    assert levels[:, 0].tolist() == pytest.approx([10 + 4 * 0.625, 11 + 4 * 0.625])
    with pytest.raises(ValueError, match="not among"):
        QuantileOrderUpTo(PROBLEM, StubForecast(), "cost", interpolate=False).prepare(batch, 5, 4)
    with pytest.raises(ValueError, match="horizons up to 4"):
        QuantileOrderUpTo(PROBLEM, StubForecast(), "cost").prepare(make_batch(np.ones((1, 20)), lead_time=3, p=3.0), 5, 4)


@pytest.mark.parametrize("lead_time", [0, 2])
def test_moving_average_on_constant_demand_orders_up_to_lead_time_demand(lead_time):
    batch = make_batch(np.full((2, 30), 3.0), lead_time=lead_time)
    policy = MovingAverageOrderUpTo(PROBLEM, window=8, objective="cost")
    traj = rollout(PROBLEM, policy, batch, 10, 12, width=max(1, lead_time))
    assert torch.equal(traj.context, torch.full((2, 12), 3.0 * (lead_time + 1)))
    # fill up; the pipeline covers the next L periods (their demand is lost, the position
    # stays); then replace each period's demand
    expected = [3.0 * (lead_time + 1)] + [0.0] * lead_time + [3.0] * (11 - lead_time)
    assert traj.orders.tolist() == [expected, expected]


def test_moving_average_safety_stock():
    batch = make_batch(np.array([[1.0, 3.0, 1.0, 3.0, 1.0, 3.0]]), lead_time=2, h=1.0, p=4.0)  # fractile 0.8
    level = MovingAverageOrderUpTo(PROBLEM, window=4, objective="cost").prepare(batch, 4, 1)
    std = (4.0 / 3.0) ** 0.5  # sample std of 1, 3, 1, 3
    assert level.item() == pytest.approx(3 * 2.0 + 0.8416212 * std * 3 ** 0.5, rel=1e-5)


def test_forecast_metrics_match_hand_computation():
    batch = make_batch(np.array([[0.0, 1.0, 5.0, 3.0, 0.0, 0.0]]))
    m = forecast_metrics(ConstantForecast(), batch, 1, 4, [0.5, 0.9], 1)  # targets 1, 5, 3
    assert m["wql_0.5"] == pytest.approx(2 * 2.5 / 9)   # pinball 0.5 + 1.5 + 0.5
    assert m["wql_0.9"] == pytest.approx(2 * 1.3 / 9)   # pinball 0.3 + 0.9 + 0.1
    assert m["mean_wql"] == pytest.approx(7.6 / 18)
    assert m["coverage_0.5"] == pytest.approx(1 / 3) and m["coverage_0.9"] == pytest.approx(2 / 3)


def test_moving_average_metrics_match_hand_computation():
    batch = make_batch(np.array([[1.0, 3.0, 1.0, 3.0, 1.0, 3.0]]))
    m = moving_average_metrics(batch, 4, 6, [0.5], 1, window=4)  # median 2 both times; targets 1, 3
    assert m["wql_0.5"] == pytest.approx(2 * (0.5 + 0.5) / 4)
    assert m["coverage_0.5"] == pytest.approx(0.5)
    m2 = moving_average_metrics(batch, 4, 6, [0.5], 2, window=4)  # one creation time: target 1 + 3
    assert m2["wql_0.5"] == pytest.approx(0.0) and m2["coverage_0.5"] == 1.0
