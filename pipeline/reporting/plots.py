"""Figures for a run: learning curve, and learned order against on-hand inventory."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pipeline.core.batch import ProductBatch  # noqa: E402
from pipeline.core.penalty import probe_box  # noqa: E402
from pipeline.core.rollout import action_matrix  # noqa: E402


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


def spread_sample(batch: ProductBatch, products: int) -> tuple[torch.Tensor, ProductBatch]:
    """Up to ``products`` products spread evenly over the batch: their rows and their batch."""
    idx = torch.linspace(0, batch.size - 1, min(products, batch.size)).round().long()
    return idx, batch.select(idx)


def first_action(policy, batch: ProductBatch, start: int, state: torch.Tensor) -> torch.Tensor:
    """The policy's first action (the order) in each row of ``state``, for the rows of ``batch``."""
    return action_matrix(policy.act(policy.prepare(batch, start, 1), 0, state))[:, 0]


@torch.no_grad()
def order_vs_on_hand(policy, baselines: dict, batch: ProductBatch, start: int, width: int,
                     products: int, state_names: list[str] | None = None):
    """The first action (the order) at the first evaluated period as the first state entry
    (on hand, for lost sales) varies, every other state entry holding one period's mean
    demand (a typical state), for a few products: learned policy against the baselines."""
    state_names = state_names or ["on_hand"]
    idx, sub = spread_sample(batch, products)
    n = len(idx)
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
        ax.plot(on_hand, first_action(policy, rep, start, state), lw=2, label="learned")
        for name, base in baselines.items():
            ax.plot(on_hand, first_action(base, rep, start, state), ls="--", lw=1, label=name)
        ax.set_title(f"product {sub.product_id[j]}  L={int(sub.lead_time[j])}\n"
                     f"h={float(sub.holding_cost[j]):.1f} p={float(sub.shortage_cost[j]):.1f} "
                     f"mean~{float(scale[j]):.1f}", fontsize=9)
        ax.set_xlabel(state_names[0] + (" (rest of the state at mean demand)" if width > 1 else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("order quantity")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


@torch.no_grad()
def order_contours(policies: dict, batch: ProductBatch, start: int, width: int, state_names: list[str],
                   visited: dict, widen: float, products: int = 4, grid: int = 61):
    """The paper's Figure 1: contours of the order quantity over the first two state entries
    (on hand y0 and the order arriving next period y1, for lost sales), every other entry 0,
    at the first evaluated period, for a few products; one row per policy (unpenalized on
    top, penalized below). The box is the penalty's probe box for that product
    (``pipeline.core.penalty.probe_box``: 0 .. ``widen`` x the largest visited value of each entry);
    dots mark the states the policy visits (their other entries are not 0)."""
    idx, sub = spread_sample(batch, products)
    n = len(idx)
    fig, axes = plt.subplots(len(policies), n, figsize=(3.4 * n, 3.0 * len(policies)), squeeze=False,
                             layout="constrained")
    for j in range(n):
        rep = sub.select([j] * grid * grid)
        lows, highs = zip(*(probe_box(v[idx[j]], widen) for v in visited.values()))
        low, high = torch.stack(lows).amin(dim=0), torch.stack(highs).amax(dim=0)
        y0, y1 = torch.meshgrid(torch.linspace(float(low[0]), float(high[0]), grid),
                                torch.linspace(float(low[1]), float(high[1]), grid), indexing="ij")
        state = torch.zeros(grid * grid, width)
        state[:, 0], state[:, 1] = y0.reshape(-1), y1.reshape(-1)
        orders = {name: first_action(pol, rep, start, state).reshape(grid, grid) for name, pol in policies.items()}
        levels = torch.linspace(0, max(float(o.max()) for o in orders.values()) + 1e-6, 13).tolist()
        for i, (name, q) in enumerate(orders.items()):
            ax = axes[i][j]
            filled = ax.contourf(y0, y1, q, levels=levels, cmap="viridis")
            ax.contour(y0, y1, q, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
            seen = visited[name][idx[j]]
            ax.scatter(seen[:, 0], seen[:, 1], s=4, c="red", alpha=0.5, linewidths=0)
            if i == 0:
                ax.set_title(f"product {sub.product_id[j]}  L={int(sub.lead_time[j])}\n"
                             f"h={float(sub.holding_cost[j]):.1f} p={float(sub.shortage_cost[j]):.1f}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{name}\n{state_names[1]}")
            if i == len(policies) - 1:
                ax.set_xlabel(state_names[0])
            if i == 0:
                fig.colorbar(filled, ax=axes[:, j].tolist(), shrink=0.8, label="order")
    return fig


def pareto_plot(table, x: str, y: str, xlabel: str, ylabel: str, higher_x_better: bool = False):
    """A sweep's trials: validation ``x`` (cost, or reward with ``higher_x_better``) against
    ``y`` (the out-of-distribution violation rate, lower is better), one point per trial with
    metrics (``table``: columns ``trial``, ``status``, ``on_front``, ``x``, ``y``), trials
    stopped early hollow, the Pareto front ringed in red and joined by a step line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    shown = table[table[x].notna() & table[y].notna()]
    for status, marker, fill in (("finished", "o", True), ("stopped by ASHA", "s", False)):
        part = shown[shown.status == status]
        if len(part):
            ax.scatter(part[x], part[y], marker=marker, s=40, label=f"{status} ({len(part)})",
                       facecolors="tab:blue" if fill else "none", edgecolors="tab:blue")
    front = shown[shown.on_front.astype(bool)].sort_values(x, ascending=not higher_x_better)
    if len(front):
        ax.scatter(front[x], front[y], s=140, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                   label=f"Pareto front ({len(front)})")
        ax.step(front[x], front[y], where="post", color="tab:red", lw=1, alpha=0.6)
    for row in shown.itertuples():
        ax.annotate(str(row.trial).rsplit("-", 1)[-1], (getattr(row, x), getattr(row, y)),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    failed = int((table.status == "failed").sum())
    ax.set_title(f"{len(table)} trials" + (f", {failed} failed (not shown)" if failed else ""), fontsize=10)
    ax.set_xlabel(xlabel + (" (higher is better)" if higher_x_better else " (lower is better)"))
    ax.set_ylabel(ylabel + " (lower is better)")
    ax.grid(alpha=0.3)
    if len(shown):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def weekly_aggregates(weekly, title: str, periods: tuple[int, int] | None = None):
    """Total demand, sales, orders and inventory across series per period, one line per
    policy (``weekly``: the per-period table of ``pipeline.favorita_study.score``), over all
    test periods or ``periods = (first, last)``, dates on the x axis."""
    shown = weekly if periods is None else weekly[weekly.period.between(*periods)]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    demand = shown.groupby("date", sort=True).demand.first()
    for ax, column, label in zip(axes, ("orders", "inventory", "sales"),
                                 ("orders placed", "inventory on hand (end of period)", "sales")):
        for i, (policy, part) in enumerate(shown.groupby("policy", sort=False)):
            ax.plot(part.date, part[column], color=f"C{i}", lw=1.4, label=policy)
        if column != "inventory":
            ax.plot(demand.index, demand.values, color="black", lw=1, ls="--", label="demand")
        ax.set_ylabel(f"{label}\n(units, all series)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3)
    axes[0].set_title(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def series_sample(trajectories: dict, batch: ProductBatch, start: int, warmup: int, dates, series: list[int],
                  labels: list[str]):
    """For a few series: demand and each policy's orders and inventory over the scored
    periods (``trajectories``: policy -> rollout from ``start``)."""
    fig, axes = plt.subplots(len(series), 2, figsize=(12, 2.6 * len(series)), squeeze=False)
    for row, (i, label) in enumerate(zip(series, labels)):
        for k, (name, traj) in enumerate(trajectories.items()):
            axes[row, 0].plot(dates, traj.orders[i, warmup:].numpy(), color=f"C{k}", lw=1.2, label=name)
            axes[row, 1].plot(dates, traj.held[i, warmup:].numpy(), color=f"C{k}", lw=1.2, label=name)
        d = batch.demand[i, start + warmup:].numpy()
        axes[row, 0].plot(dates, d, color="black", lw=1, ls="--", label="demand")
        axes[row, 0].set_ylabel(label, fontsize=9)
        for ax in axes[row]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_title("orders (dashed: demand)", fontsize=10)
    axes[0, 1].set_title("inventory on hand, end of period", fontsize=10)
    axes[0, 0].legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def gap_curve(curve, title: str):
    """A network's gap to the optimum (``valid_gap_pct``) by training wall time (``train_seconds``)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(curve.train_seconds, curve.valid_gap_pct, marker=".")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("gap to the DP policies (%)")
    if float(curve.valid_gap_pct.max()) > 5.0:  # the first epochs far off: keep the end readable
        ax.set_yscale("symlog", linthresh=1.0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def gap_bars(table, title: str):
    """The gap to the optimum of every policy (``gap_pct``) by instance: one bar group per
    instance, one bar per policy (the optimum itself left out)."""
    policies = [p for p in dict.fromkeys(table.policy) if p != "dp"]
    wide = table.pivot_table(index="instance", columns="policy", values="gap_pct", sort=False)
    fig, ax = plt.subplots(figsize=(min(16.0, 2.0 + 0.55 * len(wide)), 4.4))
    step = 0.8 / max(1, len(policies))
    for k, policy in enumerate(policies):
        x = [i + (k - (len(policies) - 1) / 2) * step for i in range(len(wide))]
        ax.bar(x, wide[policy].clip(lower=0.0), width=step, label=policy,
               color="black" if policy == "learned" else f"C{k}")
    ax.set_xticks(range(len(wide)), wide.index, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("gap to the optimum (%)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, len(policies)))
    fig.tight_layout()
    return fig


def policy_slices(actions: dict, axes: list, names: list[str], action_names: list[str], title: str):
    """Each policy's actions over a state slice: ``actions`` policy -> [N, A] on the grid of
    ``axes`` (one or two coordinate ranges, named ``names``); a heatmap per action and policy
    for two coordinates, lines for one."""
    n_act = len(action_names)
    if len(axes) == 1:
        fig, grid = plt.subplots(1, n_act, figsize=(4.2 * n_act, 3.4), squeeze=False)
        for a, ax in enumerate(grid[0]):
            for k, (name, act) in enumerate(actions.items()):
                ax.step(axes[0], act[:, a], where="mid", lw=2.5 - k, ls="-" if k == 0 else "--", label=name)
            ax.set_xlabel(names[0])
            ax.set_ylabel(action_names[a])
            ax.grid(alpha=0.3)
        grid[0][0].legend(fontsize=8)
    else:
        fig, grid = plt.subplots(n_act, len(actions), figsize=(3.8 * len(actions), 3.2 * n_act),
                                 squeeze=False, layout="constrained")
        shape = (len(axes[0]), len(axes[1]))
        extent = [float(axes[1][0]) - 0.5, float(axes[1][-1]) + 0.5, float(axes[0][0]) - 0.5, float(axes[0][-1]) + 0.5]
        for a in range(n_act):
            top = max(float(act[:, a].max()) for act in actions.values())
            for k, (name, act) in enumerate(actions.items()):
                ax = grid[a][k]
                image = ax.imshow(act[:, a].reshape(shape), origin="lower", aspect="auto", extent=extent,
                                  vmin=0.0, vmax=max(top, 1.0), cmap="viridis")
                ax.set_title(f"{name}: {action_names[a]}", fontsize=9)
                ax.set_xlabel(names[1])
                ax.set_ylabel(names[0])
            fig.colorbar(image, ax=grid[a].tolist(), shrink=0.8, label=action_names[a])
    fig.suptitle(title, fontsize=10)
    return fig
