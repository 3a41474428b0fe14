"""The lost-sales simulator against trajectories computed by hand (docs/problems/lost_sales.md)."""
import torch

from conftest import make_batch
from pipeline.core.problems import get_problem
from pipeline.core.rollout import rollout

PROBLEM = get_problem("lost_sales")


class FixedOrders:
    """A policy that places given orders [B, T], for hand-checkable trajectories."""

    def __init__(self, orders):
        self.orders = torch.as_tensor(orders, dtype=torch.float32)
        if self.orders.ndim == 1:
            self.orders = self.orders[None, :]

    def prepare(self, batch, start, horizon):
        return None

    def act(self, ctx, t, state):
        return self.orders[:, t]


def run(demand, orders, lead_time, width, **econ):
    batch = make_batch(demand, lead_time=lead_time, **econ)
    return rollout(PROBLEM, FixedOrders(orders), batch, 0, batch.periods, width, record_states=True)


def test_zero_lead_time_order_serves_this_period():
    # on hand 0; order 5, demand 3 -> sell 3, hold 2; order 3 -> 5 available, demand 6 -> lose 1;
    # order 0 -> 0 available, demand 2 -> lose 2
    traj = run([3, 6, 2], [5, 3, 0], lead_time=0, width=1, h=1.0, p=4.0, c=0.5)
    assert traj.sales[0].tolist() == [3, 5, 0]
    assert traj.held[0].tolist() == [2, 0, 0]
    assert traj.cost[0].tolist() == [2 * 1 + 5 * 0.5, 1 * 4 + 3 * 0.5, 2 * 4]
    assert traj.states[0, :, 0].tolist() == [0, 2, 0]


def test_lead_time_one_order_arrives_next_period():
    traj = run([1, 2, 4, 1], [4, 0, 3, 0], lead_time=1, width=1, h=1.0, p=9.0)
    # on hand: 0 -> (0-1)^+ + 4 = 4 -> (4-2)^+ + 0 = 2 -> (2-4)^+ + 3 = 3
    assert traj.states[0, :, 0].tolist() == [0, 4, 2, 3]
    assert traj.sales[0].tolist() == [0, 2, 2, 1]
    assert traj.cost[0].tolist() == [9, 2, 18, 2]


def test_pipeline_shifts_for_lead_time_three():
    traj = run([0, 0, 0, 0, 0], [1, 2, 3, 0, 0], lead_time=3, width=3)
    # state [on_hand, arrives in 1, arrives in 2]; an order placed at t arrives at t + 3
    assert traj.states[0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [3, 3, 0]]


def test_lead_time_two_with_demand_and_losses():
    traj = run([2, 2, 2, 2], [3, 3, 0, 0], lead_time=2, width=2, h=2.0, p=5.0)
    # t0: on hand 0, lose 2; t1: on hand 0 (order 0 arrives at t2), lose 2
    # t2: on hand 3, sell 2, hold 1; t3: on hand 1 + 3 = 4, sell 2, hold 2
    assert traj.states[0].tolist() == [[0, 0], [0, 3], [3, 3], [4, 0]]
    assert traj.cost[0].tolist() == [10, 10, 2, 4]


def test_integer_inputs_give_integer_trajectories():
    demand = torch.randint(0, 10, (16, 30)).float()
    orders = torch.randint(0, 10, (16, 30)).float()
    traj = run(demand, orders, lead_time=2, width=2)
    assert torch.equal(traj.states, traj.states.round())
    # inventory balance: what came in = what was sold + what is left
    received = orders[:, :-2].sum(1)  # orders placed up to T-3 have arrived by T-1
    final = traj.states[:, -1, 0]
    assert torch.equal(received - traj.sales[:, :-1].sum(1), final)
