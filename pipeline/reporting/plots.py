"""Figures for a run: learning curve, and learned order against on-hand inventory."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pipeline.core.batch import ProductBatch  # noqa: E402
from pipeline.core.penalty import jacobian, violations  # noqa: E402
from pipeline.core.policy import demand_scale  # noqa: E402
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
def slice_states(problem, batch: ProductBatch, start: int, width: int, row: int, multiple: float = 8.0,
                 grid: int = 41) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The state-space slice of ``violation_map`` for product ``row`` of ``batch``: state
    entries 0 and 1 (only 0 when ``width`` is 1) each on ``grid`` points from ``low`` to
    ``multiple`` x the product's mean demand before ``start``, where ``low`` is minus half
    that for an entry named ``net_inventory`` (a backlog) and 0 otherwise; every other entry 0.
    Returns (the coordinates of each varied entry [grid], the states [grid ** k, W]), entry 0
    varying slowest."""
    names = problem.state_names(width)
    scale = float(demand_scale(batch, start)[row])
    coords = [torch.linspace(-multiple / 2 * scale if names[k] == "net_inventory" else 0.0, multiple * scale, grid,
                             dtype=batch.demand.dtype) for k in range(min(width, 2))]
    state = batch.demand.new_zeros(grid ** len(coords), width)
    for k, mesh in enumerate(torch.meshgrid(*coords, indexing="ij")):
        state[:, k] = mesh.reshape(-1)
    return coords, state


def slice_violations(policy, problem, properties: list, batch: ProductBatch, start: int, row: int,
                     state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(actions [N, A], whether each state violates at least one property [N]) of ``policy``
    at the first period from ``start`` in each row of ``state`` [N, W], for product ``row``."""
    rep = batch.select([row] * len(state))
    with torch.enable_grad():
        actions, J = jacobian(policy, policy.prepare(rep, start, 1), 0, state, create_graph=False)
    if not properties:
        return actions.detach(), torch.zeros(len(state), dtype=torch.bool)
    size = violations(J.detach(), properties, problem.state_names(state.shape[1]), list(problem.actions))
    return actions.detach(), (size > 1e-6).any(dim=1)


def slice_violation_share(policy, problem, properties: list, batch: ProductBatch, start: int, width: int,
                          multiple: float = 8.0, grid: int = 41) -> float:
    """The share of the states of each product's ``slice_states`` slice where ``policy``
    violates at least one property, averaged over the products of ``batch``."""
    shares = []
    for j in range(batch.size):
        _, state = slice_states(problem, batch, start, width, j, multiple, grid)
        shares.append(float(slice_violations(policy, problem, properties, batch, start, j, state)[1].double().mean()))
    return sum(shares) / len(shares)


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in a 1-D mask."""
    out, begin = [], None
    for i, v in enumerate(mask.tolist() + [False]):
        if v and begin is None:
            begin = i
        elif not v and begin is not None:
            out.append((begin, i - 1))
            begin = None
    return out


def violation_map(policies: dict, problem, properties: list, batch: ProductBatch, start: int, width: int,
                  products: int = 3, grid: int = 41, multiple: float = 8.0):
    """The paper's Figure 1 with the violations marked: the first action over the
    ``slice_states`` slice (state entries 0 and 1 from 0, or a backlog, to ``multiple`` x
    mean demand, every other entry 0) at the first period from ``start``, for a few products
    (columns), one row per policy; the states where the policy violates at least one of
    ``properties`` hatched red, and their share of the slice in a box. For a one-entry state
    (``width`` 1): every action against entry 0 as lines, the violating stretches shaded red."""
    idx, sub = spread_sample(batch, products)
    n = len(idx)
    names, action_names = problem.state_names(width), list(problem.actions)
    fig, axes = plt.subplots(len(policies), n, figsize=(3.4 * n, 3.0 * len(policies)), squeeze=False,
                             layout="constrained")
    for j in range(n):
        coords, state = slice_states(problem, sub, start, width, j, multiple, grid)
        drawn = {name: slice_violations(pol, problem, properties, sub, start, j, state)
                 for name, pol in policies.items()}
        if width > 1:
            y0, y1 = torch.meshgrid(*coords, indexing="ij")
            top = max(float(a[:, 0].max()) for a, _ in drawn.values())
            bottom = min(float(a[:, 0].min()) for a, _ in drawn.values())
            levels = torch.linspace(bottom, max(top, bottom + 1e-6), 13).tolist()
        step = float(coords[0][1] - coords[0][0]) if grid > 1 else 0.0
        for i, (name, (actions, bad)) in enumerate(drawn.items()):
            ax = axes[i][j]
            if width > 1:
                q, mask = actions[:, 0].reshape(grid, grid), bad.reshape(grid, grid).double()
                filled = ax.contourf(y0, y1, q, levels=levels, cmap="viridis")
                ax.contour(y0, y1, q, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
                if bool(bad.any()):
                    hatched = ax.contourf(y0, y1, mask, levels=[0.5, 1.5], colors="none", hatches=["xxx"])
                    hatched.set_edgecolor("red")
                    hatched.set_linewidth(0.0)
                if j == 0:
                    ax.set_ylabel(f"{name}\n{names[1]}")
            else:
                x = coords[0]
                for a, action in enumerate(action_names):
                    ax.plot(x, actions[:, a], lw=1.5, color=f"C{a}", label=action)
                for k, (first, last) in enumerate(_runs(bad)):
                    ax.axvspan(max(float(x[first]) - step / 2, float(x[0])),
                               min(float(x[last]) + step / 2, float(x[-1])), color="red", alpha=0.2, lw=0,
                               label="violates" if k == 0 else None)
                ax.grid(alpha=0.3)
                if j == 0:
                    ax.set_ylabel(f"{name}\naction")
                    ax.legend(fontsize=7, loc="center left")
            share = float(bad.double().mean())
            ax.text(0.03, 0.97, f"violates in {100 * share:.0f}% of the slice", transform=ax.transAxes,
                    fontsize=7, va="top", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
            if i == 0:
                ax.set_title(f"product {sub.product_id[j]}  L={int(sub.lead_time[j])}\n"
                             f"h={float(sub.holding_cost[j]):.1f} p={float(sub.shortage_cost[j]):.1f}", fontsize=9)
            if i == len(policies) - 1:
                ax.set_xlabel(names[0])
        if width > 1:
            fig.colorbar(filled, ax=axes[:, j].tolist(), shrink=0.8, label=action_names[0])
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


SEED_STYLES = {"plain": ("C0", "o"), "penalized": ("C1", "s"), "by_construction": ("C2", "^")}


def seed_scatter(table, objective: str = "cost"):
    """Cost against structure across seeds, nominal scenario only (``table``: columns
    ``problem, seed, policy, scenario, avg_cost, violation_in, violation_out``, and
    ``avg_reward`` for the reward objective): one panel per problem, one point per policy
    and seed; x the violation rate (the larger of in and out) in %, symlog; y the objective
    relative to the plain policy of the same problem and seed in %, positive where worse."""
    key = "avg_cost" if objective == "cost" else "avg_reward"
    sign = 1.0 if objective == "cost" else -1.0
    nominal = table[table.scenario == "nominal"]
    problems = list(dict.fromkeys(nominal.problem))
    fig, axes = plt.subplots(1, len(problems), figsize=(4.6 * len(problems), 3.8), squeeze=False)
    for ax, name in zip(axes[0], problems):
        part = nominal[nominal.problem == name]
        plain = part[part.policy == "plain"].set_index("seed")[key]
        for k, (policy, rows) in enumerate(part.groupby("policy", sort=False)):
            color, marker = SEED_STYLES.get(policy, (f"C{k + 3}", "D"))
            base = plain.reindex(rows.seed).to_numpy(dtype=float)
            y = sign * 100.0 * (rows[key].to_numpy(dtype=float) - base) / abs(base)
            x = 100.0 * rows[["violation_in", "violation_out"]].max(axis=1).to_numpy(dtype=float)
            ax.scatter(x, y, color=color, marker=marker, s=36, alpha=0.8, label=policy)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(-0.02, 150.0)  # rates are never negative: 0 (by construction) at the left edge
        ax.set_xlabel("violation rate (%, larger of in and out)")
        ax.set_ylabel(f"{objective} vs plain, same seed (%, + is worse)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
