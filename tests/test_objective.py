"""The DirectBackprop loss and its gradient, against finite differences."""
import torch

from conftest import make_batch
from pipeline.core.policy import OrderPolicy
from pipeline.core.problems import get_problem
from pipeline.core.rollout import directbackprop_loss, period_loss, period_reward, rollout
from test_lost_sales import FixedOrders

PROBLEM = get_problem("lost_sales")


def loss_of(policy, batch, width, objective="cost", warmup=2, discount=0.95, start=32, horizon=20):
    traj = rollout(PROBLEM, policy, batch, start, horizon, width)
    return directbackprop_loss(period_loss(traj, batch, objective), warmup, discount)


def test_loss_is_discounted_average_after_warmup():
    per_period = torch.tensor([[100.0, 1.0, 2.0, 3.0]])
    w = torch.tensor([1.0, 0.5, 0.25])
    expected = (torch.tensor([1.0, 2.0, 3.0]) * w).sum() / w.sum()
    assert torch.isclose(directbackprop_loss(per_period, warmup=1, discount=0.5), expected)


def test_reward_objective_subtracts_revenue():
    batch = make_batch([4, 4], price=10.0, h=1.0, p=2.0, c=3.0)
    traj = rollout(PROBLEM, FixedOrders([5, 3]), batch, 0, 2, 1)
    # t0: buy 5 (15), sell 4 (40), hold 1 (1); t1: 1 + 3 = 4 available, sell 4, buy 3 (9)
    assert period_loss(traj, batch, "cost")[0].tolist() == [16.0, 9.0]
    # the unit left at t0 is stock valued at cost (+3), sold at t1 (-3): 40 - 16 + 3, 40 - 9 - 3
    assert period_loss(traj, batch, "reward")[0].tolist() == [-27.0, -28.0]
    # over a window that ends with no stock, the plain revenue minus cost: 24 + 31
    assert period_reward(traj, batch)[0].sum().item() == 55.0


def test_stock_bought_in_a_warm_up_is_not_free():
    # two policies with the same sales in period 1: one buys all in period 0, left out of
    # the loss, the other buys in period 1; the first must not look better after the warm-up
    batch = make_batch([0, 4], price=10.0, h=0.0, p=0.0, c=3.0)
    early = period_reward(rollout(PROBLEM, FixedOrders([4, 0]), batch, 0, 2, 1), batch)
    late = period_reward(rollout(PROBLEM, FixedOrders([0, 4]), batch, 0, 2, 1), batch)
    assert early[0, 1].item() == late[0, 1].item() == 40.0 - 12.0


def test_gradient_wrt_orders_matches_finite_differences():
    torch.manual_seed(0)
    demand = torch.randint(0, 10, (4, 52)).double()
    batch = make_batch(demand, lead_time=[0, 1, 2, 3], h=1.0, p=9.0, c=0.5).to("cpu", torch.float64)
    orders = (torch.rand(4, 20, dtype=torch.float64) * 8 + 0.13).requires_grad_()

    class Orders(FixedOrders):
        def __init__(self, q):
            self.orders = q

    loss = loss_of(Orders(orders), batch, 3)
    (grad,) = torch.autograd.grad(loss, orders)
    eps = 1e-6
    numeric = torch.zeros_like(orders)
    with torch.no_grad():
        for i in range(orders.shape[0]):
            for t in range(orders.shape[1]):
                up, down = orders.clone(), orders.clone()
                up[i, t] += eps
                down[i, t] -= eps
                numeric[i, t] = (loss_of(Orders(up), batch, 3) - loss_of(Orders(down), batch, 3)) / (2 * eps)
    assert torch.allclose(grad, numeric, atol=1e-6)
    assert grad.abs().sum() > 0


def test_gradient_wrt_network_weights_matches_finite_differences():
    torch.manual_seed(1)
    demand = torch.poisson(torch.full((6, 60), 5.0)).double()
    batch = make_batch(demand, lead_time=[0, 1, 2, 2, 1, 0], h=1.0, p=19.0).to("cpu", torch.float64)
    policy = OrderPolicy(state_width=2, kind="cnn").double()
    loss = loss_of(policy, batch, 2)
    params = list(policy.parameters())
    grads = torch.autograd.grad(loss, params)
    direction = [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    eps = 1e-7
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
        up = loss_of(policy, batch, 2)
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
        down = loss_of(policy, batch, 2)
    numeric = (up - down) / (2 * eps)
    assert abs(float(analytic)) > 1e-3
    assert torch.isclose(analytic, numeric, rtol=1e-4, atol=1e-6)
