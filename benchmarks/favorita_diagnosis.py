"""Learning curves of DirectBackprop on the weekly Favorita file: why it failed, what each change did.

    python -m benchmarks.favorita_diagnosis [seeds=1,2] [lead_times=0,2] [epochs=30] [threads=2]
                                            [settings=before,christmas_flag,stock_at_cost] [tag=]

Three settings, each adding one change to the one before (docs/favorita.md, What went wrong
and what changed):

- ``before``: the study's settings before the changes: calendar features ``christmas,
  to_christmas, year_sin, year_cos`` and units bought in a rollout's warm-up free
  (``train.stock_at_cost=false``);
- ``christmas_flag``: the Christmas flag as the only calendar feature;
- ``stock_at_cost``: and the reward with stock valued at unit cost (``experiment=favorita`` now);

and two more that change one setting of ``stock_at_cost``: ``lower_lr`` (``train.lr=0.001``)
and ``short_horizon`` (26-period rollouts, 8 windows per batch: many more start periods).

Each is the structure-penalized policy of ``experiment=favorita`` trained on every series of
the file (stores 0-13) with the job's time split, in one process (``train_epoch`` on shuffled
batches, as a Ray Train worker does). After every epoch: the training loss, the validation
reward (what a best-validation checkpoint choice sees), and the test reward (stock at unit
cost), average inventory and fill rate, orders rounded, as ``jobs.favorita`` scores them. The
test numbers per epoch are diagnosis only: the job never looks at the test before it
scores the kept policy. The 8-period moving-average pipeline's test numbers are the
reference line. Writes ``benchmarks/results/favorita_diagnosis.csv``,
``docs/figures/favorita-diagnosis.png`` and the ``favorita:diagnosis`` block of
``docs/favorita.md``.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from benchmarks import key_values, run_script
from pipeline.config import PROJECT_ROOT, ConfigError, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table, write_block

DEFAULTS = {"seeds": "1,2", "lead_times": "0,2", "epochs": 30, "threads": 2,
            "settings": "before,christmas_flag,stock_at_cost", "tag": ""}
SETTINGS = {
    "before": ["policy.features=[christmas,to_christmas,year_sin,year_cos]", "train.stock_at_cost=false"],
    "christmas_flag": ["policy.features=[christmas]", "train.stock_at_cost=false"],
    "stock_at_cost": ["policy.features=[christmas]", "train.stock_at_cost=true"],
    "lower_lr": ["policy.features=[christmas]", "train.stock_at_cost=true", "train.lr=0.001"],
    "short_horizon": ["policy.features=[christmas]", "train.stock_at_cost=true", "train.horizon=26",
                      "train.windows_per_batch=8"],
}
DATA = PROJECT_ROOT.parent / "shared" / "data" / "favorita_weekly" / "sales.parquet"


def curves(setting: str, lead_time: int, seed: int, epochs: int, folder) -> tuple[list[dict], dict]:
    """One setting's per-epoch rows, and the moving-average pipeline's test row."""
    from pipeline.core.evaluation import policy_metrics
    from pipeline.core.forecast import MovingAverageOrderUpTo
    from pipeline.core.policy import build_policy
    from pipeline.core.problems import get_problem
    from pipeline.core.training import TrainSpec, train_epoch
    from pipeline.data.parquet import read_products
    from pipeline.studies.favorita_study import TimeSplit, load_series, score, write_splits

    cfg = load_config(["experiment=favorita", f"favorita.data_path={DATA}", f"seed={seed}", f"train.epochs={epochs}",
                       "problem.objective=reward", *SETTINGS[setting]])
    f = cfg.favorita
    series, _ = load_series(f, cfg.retail, seed)
    periods = len(series.column("demand")[0])
    split = TimeSplit.of(f, periods, cfg.eval.start, cfg.eval.warmup)
    splits = write_splits(series, split, lead_time, f, folder / f"L{lead_time}", cfg.data.shard_rows)
    train, valid, test = (read_products(splits[k]) for k in ("train", "valid", "test"))
    problem = get_problem("lost_sales", {})
    width = problem.state_width(lead_time)
    dates = np.arange(periods)
    ma, _, _ = score(problem, {"ma": MovingAverageOrderUpTo(problem, f.moving_average_window, "reward")},
                     test, split, width, lead_time, dates)

    torch.manual_seed(seed)
    policy = build_policy(cfg.policy, width, problem)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.train.lr)
    spec = TrainSpec.from_config(cfg, problem, width)
    size, steps = cfg.train.batch_size, train.size // cfg.train.batch_size
    generator, rows, started = torch.Generator(), [], time.time()
    for epoch in range(epochs):
        generator.manual_seed(seed * 1_000_003 + epoch * 1009)
        order = torch.randperm(train.size, generator=torch.Generator().manual_seed(seed + epoch))
        batches = (train.select(order[i * size:(i + 1) * size]) for i in range(steps))
        stats = train_epoch(policy, optimizer, problem, batches, spec, generator,
                            progress=lambda k: epoch + k / (steps * spec.windows_per_batch))
        with torch.no_grad():
            v = policy_metrics(problem, policy, valid, cfg.eval.start, valid.periods - cfg.eval.start,
                               cfg.eval.warmup, width, round_actions=False)
            s, _, _ = score(problem, {"db": policy}, test, split, width, lead_time, dates)
        rows.append({"setting": setting, "lead_time": lead_time, "seed": seed, "epoch": epoch + 1,
                     "train_loss": float(np.mean(stats.losses)), "valid_reward": v["avg_reward"],
                     "test_reward": float(s.reward[0]), "test_inventory": float(s.avg_inventory[0]),
                     "test_fill_rate": float(s.fill_rate[0]), "seconds": time.time() - started})
        logs.get("diagnosis").info(f"{setting} L={lead_time} seed {seed} epoch {epoch + 1}/{epochs}: "
                                   f"test reward {rows[-1]['test_reward']:,.0f}, inventory "
                                   f"{rows[-1]['test_inventory']:.1f}")
    return rows, {"lead_time": lead_time, "reward": float(ma.reward[0]), "avg_inventory": float(ma.avg_inventory[0]),
                  "fill_rate": float(ma.fill_rate[0])}


def figure(table: pd.DataFrame, reference: pd.DataFrame):
    from pipeline.reporting.plots import plt

    leads = sorted(table.lead_time.unique())
    fig, axes = plt.subplots(len(leads), 3, figsize=(14, 3.6 * len(leads)), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for row, lead_time in enumerate(leads):
        part = table[table.lead_time == lead_time]
        for i, (setting, by_setting) in enumerate(part.groupby("setting", sort=False)):
            for j, (seed, run) in enumerate(by_setting.groupby("seed")):
                kw = {"color": f"C{i}", "ls": styles[j % len(styles)], "lw": 1.2,
                      "label": f"{setting}, seed {seed}"}
                axes[row, 0].plot(run.epoch, run.test_reward / 1e6, **kw)
                axes[row, 1].plot(run.epoch, run.test_inventory, **kw)
                axes[row, 2].plot(run.epoch, run.valid_reward, **kw)
                best = run.loc[run.valid_reward.idxmax()]
                axes[row, 0].plot(best.epoch, best.test_reward / 1e6, marker="o", color=f"C{i}")
        ref = reference[reference.lead_time == lead_time].iloc[0]
        axes[row, 0].axhline(ref.reward / 1e6, color="black", lw=1, ls="--", label="moving-average pipeline")
        axes[row, 1].axhline(ref.avg_inventory, color="black", lw=1, ls="--")
        axes[row, 0].set_ylabel(f"lead time {lead_time}\ntest reward (millions)", fontsize=9)
        axes[row, 1].set_ylabel("test average inventory", fontsize=9)
        axes[row, 2].set_ylabel("validation reward per series-period", fontsize=9)
        for ax in axes[row]:
            ax.set_xlabel("epoch", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    axes[0, 0].set_title("test reward (dot: the best validation epoch)", fontsize=9)
    fig.tight_layout()
    return fig


def main(args: list[str]) -> int:
    import tempfile
    from pathlib import Path

    opts = key_values(args, DEFAULTS)
    torch.set_num_threads(opts["threads"])
    seeds = [int(s) for s in str(opts["seeds"]).split(",")]
    leads = [int(s) for s in str(opts["lead_times"]).split(",")]
    settings = str(opts["settings"]).split(",")
    unknown = [x for x in settings if x not in SETTINGS]
    if unknown:
        raise ConfigError(f"settings: unknown {unknown[0]!r}; known: {', '.join(SETTINGS)}")
    suffix = f"-{opts['tag']}" if opts["tag"] else ""
    rows, refs = [], []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for lead_time in leads:
            for setting in settings:
                for seed in seeds:
                    r, ref = curves(setting, lead_time, seed, opts["epochs"], Path(tmp))
                    rows += r
            refs.append(ref)
    table, reference = pd.DataFrame(rows), pd.DataFrame(refs)
    results = PROJECT_ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    table.to_csv(results / f"favorita_diagnosis{suffix}.csv", index=False)
    docs = PROJECT_ROOT / "docs"
    fig = figure(table, reference)
    fig.savefig(docs / "figures" / f"favorita-diagnosis{suffix}.png", dpi=110)

    last = table[table.epoch == table.epoch.max()]
    best = table.loc[table.groupby(["setting", "lead_time", "seed"]).valid_reward.idxmax()]
    summary = last.merge(best[["setting", "lead_time", "seed", "epoch", "test_reward"]],
                         on=["setting", "lead_time", "seed"], suffixes=("", "_best_valid"))
    summary = summary.merge(reference.rename(columns={"reward": "ma_reward", "avg_inventory": "ma_inventory",
                                                      "fill_rate": "ma_fill_rate"}), on="lead_time")
    shown = pd.DataFrame({
        "setting": summary.setting, "lead time": summary.lead_time, "seed": summary.seed,
        "test reward, last epoch": summary.test_reward, "inventory": summary.test_inventory,
        "fill rate": summary.test_fill_rate, "best validation epoch": summary.epoch_best_valid,
        "test reward there": summary.test_reward_best_valid,
        "last vs moving average (%)": 100 * (summary.test_reward / summary.ma_reward - 1)})
    command = "python -m benchmarks.favorita_diagnosis " + " ".join(f"{k}={v}" for k, v in opts.items())
    lines = [f"Command: `{command}` ({(time.time() - started) / 60:.0f} min on this machine, "
             f"{time.strftime('%Y-%m-%d')}). Moving-average pipeline on the same test: "
             + "; ".join(f"lead time {r.lead_time}: reward {r.reward:,.0f}, inventory {r.avg_inventory:.2f}, "
                         f"fill rate {r.fill_rate:.4f}" for r in reference.itertuples()) + ".", "",
             markdown_table(shown, {"test reward, last epoch": ",.0f", "inventory": ".2f", "fill rate": ".4f",
                                    "test reward there": ",.0f", "last vs moving average (%)": "+.2f"}), "",
             f"![diagnosis](figures/favorita-diagnosis{suffix}.png)", "",
             f"Curves: `benchmarks/results/favorita_diagnosis{suffix}.csv`."]
    write_block(docs / "favorita.md", f"favorita:diagnosis{suffix}", "\n".join(lines))
    logs.get("").info("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_script(main)
