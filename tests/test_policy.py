"""The order network: causal demand window, non-negative scaled orders, no peeking."""
import torch

from conftest import make_batch
from pipeline.policy import DemandEncoder, OrderPolicy, running_moments


def test_encoder_sees_exactly_the_last_32_periods():
    torch.manual_seed(0)
    enc = DemandEncoder(channels=8, dilations=(1, 2, 4, 8, 16))
    assert enc.receptive_field == 32
    x = torch.rand(1, 100, requires_grad=True)
    enc(x)[0, 70].sum().backward()
    touched = (x.grad[0] != 0).nonzero()[:, 0]
    assert touched.min().item() == 70 - 31 and touched.max().item() == 70


def test_decision_does_not_see_demand_of_its_own_period_or_later():
    torch.manual_seed(0)
    demand = torch.poisson(torch.full((3, 80), 6.0))
    policy = OrderPolicy(state_width=2, kind="cnn")
    state = torch.tensor([[3.0, 1.0]] * 3)
    batch = make_batch(demand, lead_time=2)
    before = policy.act(policy.prepare(batch, 40, 20), 5, state)
    changed = demand.clone()
    changed[:, 45:] += 50  # the decision at t = 5 is made in period 45
    after = policy.act(policy.prepare(make_batch(changed, lead_time=2), 40, 20), 5, state)
    assert torch.equal(before, after)
    changed[:, 44] += 50
    moved = policy.act(policy.prepare(make_batch(changed, lead_time=2), 40, 20), 5, state)
    assert not torch.equal(before, moved)


def test_orders_are_non_negative_and_start_near_mean_demand():
    torch.manual_seed(0)
    demand = torch.poisson(torch.full((64, 60), 9.0))
    policy = OrderPolicy(state_width=1, kind="cnn")
    orders = policy.act(policy.prepare(make_batch(demand), 40, 10), 0, torch.zeros(64, 1) + 1e3)
    assert (orders >= 0).all()
    untrained = policy.act(policy.prepare(make_batch(demand), 40, 10), 0, torch.zeros(64, 1))
    assert 0.2 < (untrained / 9.0).mean() < 5  # one period's demand, give or take


def test_running_moments_use_only_the_past():
    demand = torch.tensor([[1.0, 3.0, 5.0, 7.0, 100.0]])
    mean, std = running_moments(demand, start=2, horizon=3)
    assert mean.tolist() == [[2.0, 3.0, 4.0]]
    assert torch.allclose(std, torch.tensor([[1.0, (8 / 3) ** 0.5, 5 ** 0.5]]))
