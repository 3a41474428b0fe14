"""The order network: causal demand window, non-negative scaled orders, no peeking."""
from dataclasses import replace

import pytest
import torch

from conftest import conv1d_encoder, make_batch
from pipeline.core import causal_conv
from pipeline.core.policy import DemandEncoder, OrderPolicy, lookahead_features, running_moments


def test_encoder_sees_exactly_the_last_32_periods():
    torch.manual_seed(0)
    enc = DemandEncoder(channels=8, dilations=(1, 2, 4, 8, 16))
    assert enc.receptive_field == 32
    x = torch.rand(1, 100, requires_grad=True)
    out = enc(x)
    assert out.shape == (1, 100 - 31, 8)  # output j: inputs j .. j + 31
    out[0, 70 - 31].sum().backward()
    touched = (x.grad[0] != 0).nonzero()[:, 0]
    assert touched.min().item() == 70 - 31 and touched.max().item() == 70


@pytest.mark.parametrize("block_rows", [1, 500, 32768])  # one product per block, several, all
@pytest.mark.parametrize("inputs", [1, 3])
def test_encoder_outputs_and_gradients_equal_conv1d(monkeypatch, block_rows, inputs):
    monkeypatch.setattr(causal_conv, "BLOCK_ROWS", block_rows)
    torch.manual_seed(inputs)
    enc = DemandEncoder(channels=16, dilations=(1, 2, 4, 8, 16), inputs=inputs).double()
    x = torch.rand(23, 81, inputs, dtype=torch.float64) * 4
    upstream = torch.randn(23, 50, 16, dtype=torch.float64)
    results = []
    for encode in (conv1d_encoder, lambda e, v: e(v)):
        enc.zero_grad()
        xi = (x[:, :, 0] if inputs == 1 else x).clone().requires_grad_(True)
        out = encode(enc, xi)
        (out * upstream).sum().backward()
        results.append((out.detach(), xi.grad, [p.grad.clone() for p in enc.parameters()]))
    (ref, ref_dx, ref_dp), (new, new_dx, new_dp) = results
    assert new.shape == (23, 50, 16)
    torch.testing.assert_close(new, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_dx, ref_dx, rtol=1e-12, atol=1e-12)
    for a, b in zip(new_dp, ref_dp):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_encoder_rejects_a_window_shorter_than_its_receptive_field():
    with pytest.raises(ValueError, match="at least 32 periods"):
        DemandEncoder(channels=4, dilations=(1, 2, 4, 8, 16))(torch.rand(2, 31))


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


def test_lookahead_features_are_the_next_periods_zero_past_the_end():
    feats = torch.arange(10.0).reshape(1, 10, 1) * torch.tensor([1.0, -1.0])  # two channels
    out = lookahead_features(feats, start=6, horizon=3, lookahead=3)  # decisions at 6, 7, 8
    assert out.shape == (1, 3, 6)
    # per decision: channel 0 at t..t+2, then channel 1 at t..t+2
    assert out[0].tolist() == [[6, 7, 8, -6, -7, -8], [7, 8, 9, -7, -8, -9], [8, 9, 0, -8, -9, 0]]


def test_features_reach_the_order_only_from_the_past_and_the_lookahead():
    """A promotion known in advance changes the order of the periods that see it (within
    the lookahead, or in the CNN's past window), never earlier ones."""
    torch.manual_seed(0)
    demand = torch.poisson(torch.full((2, 80), 6.0))
    promo = torch.zeros(2, 80)
    base = make_batch(demand)
    policy = OrderPolicy(state_width=1, kind="cnn", features=("promo",), feature_lookahead=2)
    with_promo = lambda p: replace(base, features=p[:, :, None], feature_names=("promo",))  # noqa: E731
    orders = lambda b: torch.stack([policy.act(policy.prepare(b, 40, 20), t, torch.zeros(2, 1))  # noqa: E731
                                    for t in range(20)], 1)[..., 0]
    quiet = orders(with_promo(promo))
    promo[:, 50] = 1.0  # a promotion in period 50 = decision t = 10
    busy = orders(with_promo(promo))
    changed = (quiet != busy).any(dim=0).nonzero()[:, 0].tolist()
    assert changed[0] == 9 and 10 in changed and 11 in changed  # seen from one period ahead on
    with pytest.raises(ValueError, match="no feature 'holiday'"):
        OrderPolicy(state_width=1, kind="cnn", features=("holiday",), feature_lookahead=1).prepare(
            with_promo(promo), 40, 20)
