"""Figures for a run: learning curve, and learned order against on-hand inventory."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pipeline.data import ProductBatch  # noqa: E402


def learning_curve(history: dict[str, list[tuple[int, float]]], reference: dict[str, float]):
    """``history``: metric -> [(epoch, value)]; ``reference``: label -> level (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in history.items():
        if points:
            ax.plot([p[0] + 1 for p in points], [p[1] for p in points], marker=".", label=name)
    for i, (label, level) in enumerate(reference.items()):
        ax.axhline(level, ls="--", lw=1, color=f"C{i + 3}", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("average cost per product-period")
    ax.set_title("DirectBackprop learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


@torch.no_grad()
def order_vs_on_hand(policy, baselines: dict, batch: ProductBatch, start: int, width: int,
                     products: int, state_names: list[str] | None = None):
    """The first action (the order) at the first evaluated period as the first state entry
    (on hand, for lost sales) varies, every other state entry holding one period's mean
    demand (a typical state), for a few products: learned policy against the baselines."""
    state_names = state_names or ["on_hand"]
    n = min(products, batch.size)
    idx = torch.linspace(0, batch.size - 1, n).round().long()
    sub = batch.select(idx)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    ctx = policy.prepare(sub, start, 1)
    scale = ctx.scale
    grid = torch.linspace(0, 1, 121)
    for j, ax in enumerate(axes[0]):
        top = float(2.5 * scale[j] * (sub.lead_time[j] + 1) + 5)
        on_hand = grid * top
        state = torch.zeros(len(grid), width)
        state[:, 0] = on_hand
        state[:, 1:] = scale[j]
        rep = sub.select([j] * len(grid))
        orders = as_matrix(policy.act(policy.prepare(rep, start, 1), 0, state))[:, 0]
        ax.plot(on_hand, orders, lw=2, label="learned")
        for name, base in baselines.items():
            base_orders = as_matrix(base.act(base.prepare(rep, start, 1), 0, state))[:, 0]
            ax.plot(on_hand, base_orders, ls="--", lw=1, label=name)
        ax.set_title(f"product {sub.product_id[j]}  L={int(sub.lead_time[j])}\n"
                     f"h={float(sub.holding_cost[j]):.1f} p={float(sub.shortage_cost[j]):.1f} "
                     f"mean~{float(scale[j]):.1f}", fontsize=9)
        ax.set_xlabel(state_names[0] + (" (rest of the state at mean demand)" if width > 1 else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("order quantity")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def as_matrix(action):
    return action[:, None] if action.ndim == 1 else action
