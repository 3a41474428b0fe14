"""The tables, figures and markdown report of ``jobs.favorita`` over its folds and seeds
(what each measures: docs/favorita.md, The study and Targets).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting.plots import plt
from pipeline.reporting.report_blocks import markdown_table

TITLE = "# Real retail demand: DirectBackprop against predict-then-optimize\n"  # of a new report
PTO = ("pto_mqcnn", "pto_moving_average")
DBP = ("directbackprop", "directbackprop_sipn")
DIFFERENCES = {"reward_vs_best_pto_pct": "reward vs best", "reward_vs_mqcnn_pct": "reward vs MQ-CNN",
               "reward_vs_ma_pct": "reward vs MA", "inventory_vs_best_pto_pct": "inventory vs best",
               "inventory_vs_mqcnn_pct": "inventory vs MQ-CNN", "inventory_vs_ma_pct": "inventory vs MA",
               "fill_vs_mqcnn_points": "fill vs MQ-CNN"}


def combine(results: dict, groups: list) -> dict[str, pd.DataFrame]:
    """Every run's tables stacked (``summary``, ``curve``, ``events``, ``forecast``), the
    comparison of each DirectBackprop policy with the pipelines per run and lead time
    (``comparison``), and its mean and spread over the runs (``spread``)."""
    stack = {name: pd.concat([getattr(r, name) for r in results.values()], ignore_index=True)
             for name in ("summary", "weekly", "curve", "events", "forecast")}
    stack["summary"].insert(2, "stores", [",".join(map(str, groups[k])) for k in stack["summary"].fold])
    rows = []
    for (fold, seed, lead_time), part in stack["summary"].groupby(["fold", "seed", "lead_time"], sort=True):
        by = part.set_index("policy")
        curve = stack["curve"]
        curve = curve[(curve.fold == fold) & (curve.seed == seed) & (curve.lead_time == lead_time)]
        for policy in (p for p in DBP if p in by.index):
            rows.append({"fold": fold, "seed": seed, "lead_time": lead_time, "policy": policy,
                         **versus(by, policy, curve, lead_time)})
    stack["comparison"] = pd.DataFrame(rows)
    stack["spread"] = spread(stack["comparison"])
    return stack


def versus(by: pd.DataFrame, policy: str, curve: pd.DataFrame, lead_time: int) -> dict:
    """One DirectBackprop policy against the pipelines of the same run: reward, inventory
    and fill rate differences, whether its (inventory, fill rate) point lies on or above the
    MQ-CNN pipeline's curve, and whether the targets hold (docs/favorita.md, Targets)."""
    a = by.loc[policy]
    pto = [p for p in PTO if p in by.index]
    best = max(pto, key=lambda p: by.loc[p].reward)
    out = {"reward": a.reward, "avg_inventory": a.avg_inventory, "fill_rate": a.fill_rate, "best_pto": best,
           "reward_vs_best_pto_pct": 100 * (a.reward / by.loc[best].reward - 1),
           "inventory_vs_best_pto_pct": 100 * (a.avg_inventory / by.loc[best].avg_inventory - 1)}
    for p in pto:
        short = "mqcnn" if p == "pto_mqcnn" else "ma"
        out[f"reward_vs_{short}_pct"] = 100 * (a.reward / by.loc[p].reward - 1)
        out[f"inventory_vs_{short}_pct"] = 100 * (a.avg_inventory / by.loc[p].avg_inventory - 1)
        out[f"fill_vs_{short}_points"] = 100 * (a.fill_rate - by.loc[p].fill_rate)
    above = np.nan
    if "pto_mqcnn" in by.index and len(curve):
        points = pd.concat([curve[["avg_inventory", "fill_rate"]],
                            by.loc[["pto_mqcnn"], ["avg_inventory", "fill_rate"]]]).sort_values("avg_inventory")
        above = bool(a.fill_rate >= np.interp(a.avg_inventory, points.avg_inventory, points.fill_rate))
    out["above_mqcnn_curve"] = above
    more = all(a.reward > by.loc[p].reward for p in pto)
    if lead_time == 0:
        service = ("pto_mqcnn" in by.index and a.fill_rate >= by.loc["pto_mqcnn"].fill_rate) or above is True
        out["target_met"] = bool(more and a.avg_inventory < by.loc[best].avg_inventory and service)
    else:
        out["target_met"] = bool(more and "pto_mqcnn" in by.index
                                 and a.avg_inventory < by.loc["pto_mqcnn"].avg_inventory)
    return out


def spread(comparison: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, worst and best over the runs of each difference, per lead
    time and policy, and how many runs meet the targets."""
    if comparison.empty:
        return pd.DataFrame()
    keys = [c for c in comparison.columns if c.endswith(("_pct", "_points"))]
    rows = []
    for (lead_time, policy), part in comparison.groupby(["lead_time", "policy"], sort=True):
        for key in keys:
            values = part[key].astype(float)
            worst = values.max() if key.startswith("inventory") else values.min()
            rows.append({"lead_time": lead_time, "policy": policy, "measure": key, "mean": values.mean(),
                         "sd": values.std(ddof=1) if len(values) > 1 else np.nan, "worst": worst,
                         "runs": len(values)})
        rows.append({"lead_time": lead_time, "policy": policy, "measure": "runs_meeting_target",
                     "mean": float(part.target_met.sum()), "sd": np.nan, "worst": np.nan, "runs": len(part)})
    return pd.DataFrame(rows)


def headline_metrics(comparison: pd.DataFrame) -> dict[str, float]:
    """The mean and worst reward difference to the best pipeline, per lead time and policy,
    and the runs meeting the targets, for the MLflow run."""
    out = {}
    if comparison.empty:
        return out
    for (lead_time, policy), part in comparison.groupby(["lead_time", "policy"]):
        out[f"L{lead_time}/{policy}/reward_vs_best_pto_mean_pct"] = float(part.reward_vs_best_pto_pct.mean())
        out[f"L{lead_time}/{policy}/reward_vs_best_pto_worst_pct"] = float(part.reward_vs_best_pto_pct.min())
        out[f"L{lead_time}/{policy}/runs_meeting_target"] = float(part.target_met.sum())
    return out


# ---------------------------------------------------------------- figures

def report_figures(tables: dict[str, pd.DataFrame]) -> dict:
    """Per lead time: the MQ-CNN pipeline's (inventory, fill rate) curve over service
    levels with every policy's point, one panel per run (``curve_L<L>``); the periods
    around Christmas and the spike weeks, averaged over the runs (``events_L<L>``)."""
    figs = {}
    summary, curve, weekly = tables["summary"], tables["curve"], tables["weekly"]
    for lead_time in sorted(summary.lead_time.unique()):
        figs[f"curve_L{lead_time}"] = curve_figure(summary[summary.lead_time == lead_time],
                                                   curve[curve.lead_time == lead_time] if len(curve) else curve,
                                                   lead_time)
        figs[f"events_L{lead_time}"] = events_figure(weekly[weekly.lead_time == lead_time],
                                                     tables["events"], lead_time)
    return figs


def curve_figure(summary: pd.DataFrame, curve: pd.DataFrame, lead_time: int):
    runs = list(summary.groupby(["fold", "seed"], sort=True))
    cols = min(3, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, ((fold, seed), part) in zip(axes.flat, runs):
        line = curve[(curve.fold == fold) & (curve.seed == seed)] if len(curve) else curve
        mq = part[part.policy == "pto_mqcnn"]
        if len(line) and len(mq):
            pts = pd.concat([line[["avg_inventory", "fill_rate"]], mq[["avg_inventory", "fill_rate"]]])
            pts = pts.sort_values("avg_inventory")
            ax.plot(pts.avg_inventory, pts.fill_rate, color="grey", lw=1, marker=".",
                    label="MQ-CNN, service level varied")
        for i, row in enumerate(part.itertuples()):
            ax.plot(row.avg_inventory, row.fill_rate, marker="o", ls="", color=f"C{i}", label=row.policy)
        ax.set_title(f"fold {fold}, seed {seed}", fontsize=9)
        ax.set_xlabel("average inventory (units per series)", fontsize=8)
        ax.set_ylabel("fill rate", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"inventory and fill rate on the test periods, lead time {lead_time}", fontsize=10)
    fig.tight_layout()
    return fig


def events_figure(weekly: pd.DataFrame, events: pd.DataFrame, lead_time: int):
    """Lost sales and stock per period around Christmas (mean over runs of the totals over
    series), and the fill rate on the spike weeks per policy (mean over runs)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    xmas = events[(events.lead_time == lead_time) & events.event.str.startswith("christmas")]
    if len(xmas) and len(weekly):
        around = weekly[weekly.in_christmas]
        mean = around.groupby(["policy", "date"], sort=False)[["lost", "inventory"]].mean().reset_index()
        for i, (policy, part) in enumerate(mean.groupby("policy", sort=False)):
            axes[0].plot(part.date, part.lost, color=f"C{i}", marker=".", label=policy)
            axes[1].plot(part.date, part.inventory, color=f"C{i}", marker=".", label=policy)
        axes[0].set_title(f"lost sales around {xmas.event.iloc[0]} (units, all series)", fontsize=9)
        axes[1].set_title("stock on hand, end of period (units, all series)", fontsize=9)
        axes[0].legend(fontsize=7)
        for ax in axes[:2]:
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
            ax.grid(alpha=0.3)
    spikes = events[(events.lead_time == lead_time) & events.event.str.contains("spikes")]
    if len(spikes):
        fill = spikes.groupby("policy", sort=False).fill_rate.mean()
        axes[2].bar(range(len(fill)), fill.values, color=[f"C{i}" for i in range(len(fill))])
        axes[2].set_xticks(range(len(fill)), fill.index, rotation=20, fontsize=7)
        axes[2].set_ylim(max(0.0, fill.min() - 0.1), 1.0)
        axes[2].set_title(f"fill rate in the {spikes.event.iloc[0]}", fontsize=9)
        axes[2].grid(alpha=0.3, axis="y")
    fig.suptitle(f"Christmas and demand spikes, lead time {lead_time} (mean over runs)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the markdown report

def report(cfg, args, info, split, dates, groups, n_series, results, tables, figures, seconds) -> str:
    """The report section of a ``jobs.favorita`` run over folds and seeds."""
    f = cfg.favorita
    fractile = next(iter(results.values())).fractile
    summary, comparison, spread_table = tables["summary"], tables["comparison"], tables["spread"]
    folds = sorted({k for k, _ in results})
    lines = [f"## {cfg.name}", "",
             f"Command: `python -m jobs.favorita {' '.join(args)}` ({seconds / 60:.0f} min on this machine, "
             f"{len(results)} runs). Data: {info['source']}, periods from {dates[0]}.", "",
             f"Time split: training periods 0-{split.train_end - 1} ({dates[0]} to {dates[split.train_end - 1]}), "
             f"validation {split.train_end}-{split.valid_end - 1}, test {split.valid_end}-{split.test_end - 1} "
             f"({dates[split.valid_end]} to {dates[split.test_end - 1]}), each scored range after "
             f"{split.history} periods of history and {split.warmup} of warm-up. Economics: price {f.price}, "
             f"unit cost {f.unit_cost}, holding cost {f.holding_cost} (critical fractile {fractile:.3f}); "
             "reward with the stock valued at unit cost. Folds: "
             + "; ".join(f"{k}: stores {','.join(map(str, groups[k]))} ({n_series[k]:,} series)" for k in folds)
             + f". Seeds: {sorted({s for _, s in results})}. DirectBackprop: {cfg.train.epochs} epochs, "
             f"features {list(cfg.policy.features)}, keeps its {cfg.train.keep.replace('_', ' ')} epoch "
             f"(`directbackprop_sipn`: penalty weights {list(cfg.penalty.weights)}); MQ-CNN: {f.forecast_epochs} "
             f"epochs; moving average: {f.moving_average_window} periods. Headline policy, fixed before the "
             f"runs: `{f.headline}`.", "",
             "Wall time per run (every lead time): " + ", ".join(
                 f"fold {k} seed {s} {r.seconds / 60:.1f} min" for (k, s), r in sorted(results.items())) + ".", ""]
    for lead_time in sorted(summary.lead_time.unique()):
        part = summary[summary.lead_time == lead_time]
        wide = part.pivot_table(index=["fold", "seed"], columns="policy",
                                values=["reward", "avg_inventory", "fill_rate"]).reset_index()
        policies = [p for p in (*DBP, *PTO) if p in part.policy.values]
        table = pd.DataFrame({"fold": wide["fold"], "seed": wide["seed"]})
        for p in policies:
            table[f"{p} reward"] = wide["reward"][p]
            table[f"{p} inventory"] = wide["avg_inventory"][p]
            table[f"{p} fill"] = wide["fill_rate"][p]
        lines += [f"### Lead time {lead_time}: every fold and seed (test periods)", "",
                  markdown_table(table, {c: (",.0f" if c.endswith("reward") else ".2f" if c.endswith("inventory")
                                             else ".4f") for c in table.columns if " " in c}), ""]
        comp = comparison[comparison.lead_time == lead_time]
        if len(comp):
            shown = comp[["fold", "seed", "policy", "best_pto", *DIFFERENCES, "above_mqcnn_curve", "target_met"]]
            lines += ["DirectBackprop against the pipelines (differences in percent, fill rate in points; "
                      "`best_pto`: the pipeline with more reward; `above curve`: its (inventory, fill rate) point "
                      "is on or above the MQ-CNN pipeline's curve):", "",
                      markdown_table(shown.rename(columns=DIFFERENCES | {"above_mqcnn_curve": "above curve",
                                                                         "best_pto": "best pipeline"}),
                                     dict.fromkeys(DIFFERENCES.values(), "+.2f")), ""]
            sp = spread_table[(spread_table.lead_time == lead_time) & spread_table.measure.isin(DIFFERENCES)]
            met = comp.groupby("policy", sort=False).target_met.agg(["sum", "size"])
            lines += ["Mean, standard deviation and worst run:", "",
                      markdown_table(sp.drop(columns="lead_time").replace({"measure": DIFFERENCES}),
                                     {"mean": "+.2f", "sd": ".2f", "worst": "+.2f"}), "",
                      "Runs meeting the targets: " + ", ".join(f"`{p}` {int(r['sum'])} of {int(r['size'])}"
                                                               for p, r in met.iterrows()) + ".", ""]
        lines += [f"![{name}]({figures[name]})\n" for name in (f"curve_L{lead_time}", f"events_L{lead_time}")
                  if name in figures]
        events = tables["events"]
        ev = events[events.lead_time == lead_time].groupby(["event", "policy"], sort=False)[
            ["demand", "sales", "lost", "fill_rate", "stock", "reward"]].mean().reset_index()
        if len(ev):
            lines += [f"Christmas and the largest spikes, lead time {lead_time} (mean over runs; `stock`: around "
                      "Christmas the mean per period of the units on hand, for the spikes the units on hand "
                      "going into the spike periods):", "",
                      markdown_table(ev, {"demand": ",.0f", "sales": ",.0f", "lost": ",.0f", "fill_rate": ".4f",
                                          "stock": ",.0f", "reward": ",.0f"}), ""]
    forecast = tables["forecast"]
    if len(forecast):
        keys = [c for c in forecast.columns if c.startswith(("wql_", "coverage_"))] + ["mean_wql"]
        mean = forecast.groupby(["model", "lead_time"], sort=False)[keys].mean().reset_index()
        lines += ["### Forecast accuracy on the test periods (mean over runs)", "",
                  markdown_table(mean.rename(columns={"lead_time": "lead time"}), dict.fromkeys(keys, ".3f")), ""]
    lines.append(f"Results: `{f.output_dir}/summary.csv`, `comparison.csv`, `spread.csv`, `curve.csv`, "
                 "`events.csv`, `forecast.csv`, `plots/`, and one folder per run (`f<fold>-s<seed>/`).")
    return "\n".join(lines)
