"""Ray Tune adapter: a sweep over the structure-penalty weights and the learning rate (docs/architecture.md,
Training). The pure helpers (search space, trial config, Pareto front, results table) come first;
``run_sweep`` is the driver.
"""
from __future__ import annotations

import copy
import math
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from mlflow.tracking import MlflowClient
from ray import cloudpickle, tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from pipeline.config import Config, ConfigError, from_yaml, resolve_path, to_yaml
from pipeline.core.penalty import penalty_properties
from pipeline.reporting import logs
from pipeline.reporting.progress import eta
from pipeline.adapters.checkpoint import best_path
from pipeline.adapters.ray_session import init_ray, local_cpus as per_runs, quiet_ray_logs
from pipeline.adapters.registry import register_sweep_best
from pipeline.adapters.tracking import PARENT_TAG, RUN_NAME_TAG, Tracker, source_tags, tracking_uri
from pipeline.adapters.training_run import prepare_data, train
from pipeline.core.problems import get_problem
from pipeline.reporting.plots import pareto_plot

log_sweep, log_mlflow = logs.get("sweep"), logs.get("mlflow")

FINISHED, STOPPED, FAILED = "finished", "stopped by ASHA", "failed"
SWEEP_TAG = "sidbp.sweep"          # on a trial's run: the sweep's name
STATUS_TAG = "sidbp.trial_status"  # finished / stopped by ASHA / failed
ERROR_TAG = "sidbp.error"          # a failed trial: the first line of its error
SEED_TAG = "sidbp.sweep_seed"      # on a sweep's run: the seed its trials' parameters were drawn from
DONE_FILE = "_SWEEP_DONE"          # in the sweep's folder once Tune has run every trial
OOD, IN = "valid/out/violation_rate", "valid/in/violation_rate"

# Trial numbers that raise on purpose once their MLflow run is open (tests: the sweep
# reports a failed trial and goes on). Read by the driver and handed to the trials.
FAIL_TRIALS: frozenset[int] = frozenset()


# ---------------------------------------------------------------- pure helpers

def objective(cfg: Config) -> tuple[str, str]:
    """The validation metric ASHA ranks trials by, and its mode."""
    return ("valid/avg_reward", "max") if cfg.problem.objective == "reward" else ("valid/avg_cost", "min")


def weight_keys(cfg: Config, n_properties: int) -> list[str]:
    """The search-space keys of the penalty weights: one for all properties, or one each."""
    return [f"weight_{i}" for i in range(n_properties)] if cfg.sweep.weights_per_property else ["weight"]


def search_space(cfg: Config, n_properties: int) -> dict:
    """Log-uniform learning rate and penalty weight(s)."""
    return {"lr": tune.loguniform(*cfg.sweep.lr_range),
            **{k: tune.loguniform(*cfg.sweep.weight_range) for k in weight_keys(cfg, n_properties)}}


def draw_trials(cfg: Config, n_properties: int) -> list[dict]:
    """The parameters of the sweep's ``sweep.num_samples`` trials, drawn up front from
    ``search_space``'s distributions (log-uniform) with numpy's ``default_rng(cfg.seed)``:
    two sweeps with the same seed run the same trials; trial k gets the k-th draw."""
    rng = np.random.default_rng(cfg.seed)

    def loguniform(lo: float, hi: float) -> float:
        return min(max(float(math.exp(rng.uniform(math.log(lo), math.log(hi)))), lo), hi)

    keys = weight_keys(cfg, n_properties)
    return [{"lr": loguniform(*cfg.sweep.lr_range), **{k: loguniform(*cfg.sweep.weight_range) for k in keys}}
            for _ in range(cfg.sweep.num_samples)]


def trial_weights(params: dict) -> list[float]:
    """``penalty.weights`` of a trial from its sampled parameters."""
    if "weight" in params:
        return [float(params["weight"])]
    keys = sorted((k for k in params if k.startswith("weight_")), key=lambda k: int(k.split("_")[1]))
    return [float(params[k]) for k in keys]


def trial_number(trial_id: str) -> int:
    """Tune numbers a sweep's trials in its ids: ``"3f2a1_00004"`` is trial 4."""
    return int(trial_id.rsplit("_", 1)[-1])


def trial_name(sweep: str, k: int) -> str:
    return f"{sweep}-trial-{k}"


def trial_config(base: Config, name: str, params: dict) -> Config:
    """The sweep's config with one trial's run name, learning rate and penalty weights."""
    cfg = copy.deepcopy(base)
    cfg.name = name
    cfg.train.lr = float(params["lr"])
    cfg.penalty.weights = trial_weights(params)
    return cfg


def pareto_front(xs, ys) -> list[bool]:
    """Which points (x, y) no other point dominates, both lower-is-better: a point is
    dominated by one at least as good in both and better in one. NaN points are never on
    the front; equal points are both on it."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys)]
    ok = [not (math.isnan(x) or math.isnan(y)) for x, y in pts]
    return [ok[i] and not any(ok[j] and x2 <= x and y2 <= y and (x2 < x or y2 < y)
                              for j, (x2, y2) in enumerate(pts) if j != i)
            for i, (x, y) in enumerate(pts)]


def error_summary(error: BaseException | None) -> str:
    """The first line of the error that made a trial fail, past Ray's wrappers (a remote
    task's error, Ray Train's worker-group error)."""
    if error is None:
        return ""
    seen, exc = set(), error
    while id(exc) not in seen:
        seen.add(id(exc))
        failures = getattr(exc, "worker_failures", None)  # ray.train.WorkerGroupError
        if isinstance(failures, dict) and failures:
            inner = next(iter(failures.values()))
        else:  # a RayTaskError's cause, or the chained exception
            inner = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc.__cause__
        if inner is None:
            break
        exc = inner
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def epochs_reported(metrics: dict) -> int:
    """The epochs a trial had done at its last report to Tune (a resumed trial reports to
    Tune only the epochs after its checkpoint: counted from its ``epoch``)."""
    return int(metrics["epoch"]) + 1 if "epoch" in metrics else int(metrics.get("training_iteration", 0) or 0)


def trial_status(error: str, epochs_run: int, epochs: int) -> str:
    return FAILED if error else FINISHED if epochs_run >= epochs else STOPPED


def results_table(records: list[dict], cfg: Config, weight_columns: list[str]) -> pd.DataFrame:
    """One row per trial, in trial order. ``records``: per trial ``trial``, ``params``,
    ``metrics`` (its last report to Tune; empty if none), ``error`` (first line, or ""),
    ``run_id``. ``epochs`` counts the epochs done at the trial's last report to Tune (a trial
    stopped by ASHA may have logged one more to MLflow before its actor was ended), and the
    metrics are that report's.
    Only finished trials are candidates for the Pareto front: a trial stopped by ASHA was
    measured after fewer epochs, and a failed one not at all."""
    metric, mode = objective(cfg)
    value_col = metric.replace("/", "_")
    rows = []
    for r in sorted(records, key=lambda r: _trial_sort_key(r["trial"])):
        m = r["metrics"] or {}
        epochs_run = epochs_reported(m)
        rows.append({"trial": r["trial"], "status": trial_status(r["error"], epochs_run, cfg.train.epochs),
                     "epochs": epochs_run, "lr": float(r["params"]["lr"]),
                     **dict(zip(weight_columns, trial_weights(r["params"]))),
                     value_col: float(m.get(metric, math.nan)),
                     "valid_out_violation_rate": float(m.get(OOD, math.nan)),
                     "valid_in_violation_rate": float(m.get(IN, math.nan)), "on_front": False,
                     "run_id": r.get("run_id") or "", "error": r["error"]})
    table = pd.DataFrame(rows, columns=["trial", "status", "epochs", "lr", *weight_columns, value_col,
                                        "valid_out_violation_rate", "valid_in_violation_rate", "on_front",
                                        "run_id", "error"])
    finished = table.status == FINISHED
    sign = -1.0 if mode == "max" else 1.0
    table["on_front"] = pareto_front((sign * table[value_col]).where(finished),
                                     table.valid_out_violation_rate.where(finished))
    return table


def _trial_sort_key(name: str):
    tail = str(name).rsplit("-", 1)[-1]
    return (0, int(tail), "") if tail.isdigit() else (1, 0, str(name))


def format_results(table: pd.DataFrame) -> str:
    return table.assign(run_id=table.run_id.str[:12]).to_string(index=False, float_format=lambda v: f"{v:.4g}")


def local_cpus(cfg: Config) -> int:
    """Logical CPUs for a local Ray: enough for every concurrent trial's Ray Train run."""
    return per_runs(cfg, min(cfg.sweep.max_concurrent_trials, cfg.sweep.num_samples))


# ---------------------------------------------------------------- one trial (in a Tune actor)

def run_trial(params: dict, ctx: dict) -> None:
    """A Tune trial: this trial's config, its MLflow run under the sweep's, one training
    run (``training_run.train``, not evaluated) reporting every epoch to Tune. Marks its run
    FINISHED or FAILED; a trial stopped by ASHA is killed first, and the driver marks its run."""
    quiet_ray_logs()
    base = from_yaml(ctx["config"])
    name = tune.get_context().get_trial_name()
    k = int(name.rsplit("-", 1)[-1])
    cfg = trial_config(base, name, params)
    tracker = Tracker(cfg)
    run_id = tracker.start(cfg, kind="trial", data=Path(ctx["splits"]["train"]).parent,
                           parent_run_id=ctx["parent_run_id"],
                           tags={**ctx["source"], SWEEP_TAG: base.name, "sidbp.trial": k})
    error = None
    try:
        if k in ctx["fail_trials"]:
            raise RuntimeError(f"failure injected on purpose in trial {k} (pipeline.adapters.tune_sweep.FAIL_TRIALS)")
        train(cfg, splits={s: Path(p) for s, p in ctx["splits"].items()}, run_dir=Path(ctx["trials_dir"]) / name,
              tracker=tracker, callbacks=[TuneReportCallback()], evaluate=False)
    except BaseException as e:
        # one that ended while tearing down after its last epoch was logged (Tune ends a trial
        # at max_t as soon as it reports it) finished; marking it failed here would race the
        # driver's final marks (settle_runs)
        if len(tracker.metric_history("valid/avg_cost")) < cfg.train.epochs:
            error = e
        raise
    finally:
        tracker.client.set_tag(run_id, STATUS_TAG, FINISHED if error is None else FAILED)
        if error is not None:
            tracker.client.set_tag(run_id, ERROR_TAG, error_summary(error)[:5000])
        tracker.finish("FINISHED" if error is None else "FAILED")


# ---------------------------------------------------------------- the driver

def _progress_callback(cfg: Config, started: float, weight_columns: list[str], uri: str, experiment_id: str,
                       parent_run_id: str):
    metric, _ = objective(cfg)
    label = metric.split("/")[-1].replace("avg_", "")
    total = cfg.sweep.num_samples

    def describe(m: dict) -> str:
        return (f"valid {label} {m.get(metric, math.nan):.4f}  OOD violation rate {m.get(OOD, math.nan):.3f}  "
                f"in-distribution {m.get(IN, math.nan):.3f}")

    class Progress(tune.Callback):
        """Prints each trial's start, epochs and end (i of N, metrics, time elapsed)."""
        done = 0

        def ended(self, trial, outcome: str) -> None:
            self.done += 1
            log_sweep.info(f"trial {self.done}/{total} done: {trial} {outcome}  "
                           f"{eta(self.done, total, started, 'trials')}")

        def on_trial_start(self, iteration, trials, trial, **info):
            w = "  ".join(f"{c} {v:.4g}" for c, v in zip(weight_columns, trial_weights(trial.config)))
            log_sweep.info(f"{trial} started: lr {trial.config['lr']:.4g}  {w}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            log_sweep.info(f"{trial} epoch {result.get('training_iteration')}/{cfg.train.epochs}: {describe(result)}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            m = trial.last_result or {}
            epochs = epochs_reported(m)
            status = trial_status("", epochs, cfg.train.epochs)
            self.ended(trial, f"{status} after {epochs} epochs  {describe(m)}")
            if status == STOPPED:  # its actor is being ended: mark its run now (settle_runs checks again)
                client = MlflowClient(uri)  # made here: a callback is pickled with the Tuner's state
                for run in client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}' and "
                                                              f"tags.`{RUN_NAME_TAG}` = '{trial}'"):
                    client.set_tag(run.info.run_id, STATUS_TAG, STOPPED)
                    client.set_terminated(run.info.run_id, status="KILLED")

        def on_trial_error(self, iteration, trials, trial, **info):
            error = "(see the results table)"
            path = trial.pickled_error_file  # Tune has just written it to the trial's local folder
            if path and Path(path).exists():
                try:
                    error = error_summary(cloudpickle.loads(Path(path).read_bytes()))
                except (OSError, EOFError, AttributeError, ImportError, pickle.UnpicklingError) as e:
                    error = f"(error not readable here: {type(e).__name__}; see the results table)"
            self.ended(trial, f"FAILED: {error}")

    return Progress()


@dataclass
class SweepOutcome:
    table: pd.DataFrame
    run_id: str
    tracker: object
    sweep_dir: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return bool((self.table.status != FAILED).any())


def run_sweep(cfg: Config) -> SweepOutcome:
    """Write the data once, open the sweep's MLflow run, run the Tune sweep on Ray, settle
    the trials' MLflow runs, log the results table and the Pareto plot."""
    started = time.time()
    if cfg.train.num_workers < 1:
        raise ConfigError("train.num_workers must be >= 1 in a sweep (Ray Train's in-process mode, "
                          f"num_workers=0, reports nothing to Tune), got {cfg.train.num_workers}")
    s = cfg.sweep
    cfg = copy.deepcopy(cfg)
    cfg.mlflow.tracking_uri = tracking_uri(cfg)  # absolute: trials run elsewhere
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    width = problem.state_width(cfg.data.lead_time_range[1])
    props = penalty_properties(problem, width, list(cfg.penalty.properties))
    weight_columns = [f"weight/{p.slug}" for p in props] if s.weights_per_property else ["weight"]
    metric, mode = objective(cfg)
    grace = min(s.grace_period, cfg.train.epochs)

    out_dir = resolve_path(cfg.output_dir)
    sweep_dir = out_dir / cfg.name
    # an interrupted sweep (its driver died) is resumed: its finished trials kept, the
    # unfinished ones continued from their checkpoints; a finished one is run again afresh
    done = sweep_dir / DONE_FILE
    restore = not done.exists() and (sweep_dir / "tune").exists() and tune.Tuner.can_restore(str(sweep_dir / "tune"))
    if not restore:
        for stale in (sweep_dir / "trials", sweep_dir / "tune", done):
            if stale.exists():
                log_sweep.info(f"removing the previous sweep's {stale}")
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "config.yaml").write_text(to_yaml(cfg))

    tracker = Tracker(cfg)  # creates the experiment once, before any trial; fails at once if unreachable
    splits = prepare_data(cfg, out_dir, problem)

    run_id = tracker.start(cfg, kind="sweep", data=splits["train"].parent, resume=restore,
                           tags={SEED_TAG: cfg.seed})
    log_mlflow.info(f"sweep run {run_id} ({'resumed' if tracker.resumed else 'new'}) at {tracker.uri}")
    if restore:
        log_sweep.info(f"resuming the interrupted sweep in {sweep_dir / 'tune'}: finished trials are kept, "
                       "unfinished ones continue from their last checkpoints")
    with tracker.ending():
        wanted = local_cpus(cfg)
        init_ray(cfg, num_cpus=wanted)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < wanted:
            log_sweep.info(f"note: Ray has {cpus:g} CPUs; {wanted} would run "
                           f"{s.max_concurrent_trials} trials at once with CPUs to spare for Ray Data")
        log_sweep.info(f"{s.num_samples} trials, {s.max_concurrent_trials} at a time, ASHA on {metric} ({mode}), "
                       f"grace {grace} of {cfg.train.epochs} epochs, reduction factor {s.reduction_factor}; "
                       f"lr in {list(s.lr_range)}, {' '.join(weight_columns)} in {list(s.weight_range)} (log-uniform, "
                       f"drawn from seed {cfg.seed})")
        # the trials' runs carry the driver's user and source, not those of a Ray worker process
        ctx = {"config": to_yaml(cfg), "splits": {k: str(v) for k, v in splits.items()},
               "trials_dir": str(sweep_dir / "trials"), "parent_run_id": run_id, "fail_trials": set(FAIL_TRIALS),
               "source": source_tags()}
        # the trial itself only waits on its Ray Train run: a token share of a CPU (Tune
        # refuses none), so the logical CPUs go to the workers and Ray Data
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"cpu": 0.01})
        name = cfg.name
        if restore:
            tuner = tune.Tuner.restore(str(sweep_dir / "tune"), trainable, resume_unfinished=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=search_space(cfg, len(props)),
                tune_config=tune.TuneConfig(
                    # a trial at its last epoch ends by itself: ASHA stopping it there would only
                    # kill its Ray Train run as it shuts down
                    scheduler=ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode,
                                            max_t=cfg.train.epochs, grace_period=grace,
                                            reduction_factor=s.reduction_factor, stop_last_trials=False),
                    # the trials drawn from the seed (draw_trials), in order; the generator limits
                    # the concurrent trials (Tune ignores max_concurrent_trials with a generator)
                    search_alg=BasicVariantGenerator(points_to_evaluate=draw_trials(cfg, len(props)),
                                                     max_concurrent=s.max_concurrent_trials),
                    num_samples=s.num_samples,
                    trial_name_creator=lambda t: trial_name(name, trial_number(t.trial_id)),
                    trial_dirname_creator=lambda t: trial_name(name, trial_number(t.trial_id))),
                run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0),
                                          callbacks=[_progress_callback(cfg, started, weight_columns, tracker.uri,
                                                                       tracker.experiment_id, run_id)]),
            )
        grid = tuner.fit()
        done.touch()

        children = {r.data.tags.get(RUN_NAME_TAG): r for r in tracker.client.search_runs(
            [tracker.experiment_id], f"tags.`{PARENT_TAG}` = '{run_id}'", max_results=10000)}
        run_ids = {trial: run.info.run_id for trial, run in children.items()}
        records = [{"trial": Path(r.path).name, "params": r.config, "metrics": r.metrics or {},
                    "error": error_summary(r.error), "run_id": run_ids.get(Path(r.path).name, "")} for r in grid]
        table = results_table(records, cfg, weight_columns)
        settle_runs(tracker.client, table, children)

        value_col = metric.replace("/", "_")
        tracker.log_table(table, "sweep_results")
        fig = pareto_plot(table, value_col, "valid_out_violation_rate", f"validation {metric.split('/')[-1]}",
                          "out-of-distribution violation rate", higher_x_better=mode == "max")
        fig.savefig(sweep_dir / "pareto.png", dpi=110)
        tracker.log_figure(fig, "plots/pareto.png")
        table.to_csv(sweep_dir / "sweep_results.csv", index=False)
        counts = table.status.value_counts()
        summary = {"sweep/trials_finished": counts.get(FINISHED, 0), "sweep/trials_stopped": counts.get(STOPPED, 0),
                   "sweep/trials_failed": counts.get(FAILED, 0), "sweep/trials_on_front": int(table.on_front.sum()),
                   "wall_seconds": time.time() - started}
        finished = table[(table.status == FINISHED) & table[value_col].notna()]
        if not finished.empty:  # the challenger: the finished trial with the best validation objective
            best = finished.loc[finished[value_col].idxmax() if mode == "max" else finished[value_col].idxmin()]
            summary[f"sweep/best_{value_col}"] = best[value_col]
            path = best_path(sweep_dir / "trials" / best.trial)
            if best.run_id and path.exists():
                register_sweep_best(tracker.client, cfg, best, value_col, path, run_id, splits["test"])
            else:
                log_mlflow.info(f"no challenger registered: {best.trial} has no run or no {path}")
        tracker.log_metrics(summary)
    return SweepOutcome(table, run_id, tracker, sweep_dir, time.time() - started)


def settle_runs(client, table: pd.DataFrame, children: dict) -> None:
    """Every trial's MLflow run ends in a final status: FINISHED, FAILED, or KILLED for a
    trial ASHA stopped (its actor is ended mid-run and cannot mark it), with the trial's
    status (and error) as tags."""
    final = {FINISHED: "FINISHED", STOPPED: "KILLED", FAILED: "FAILED"}
    for row in table[table.trial.isin(list(children))].itertuples():
        run_id = children[row.trial].info.run_id
        client.set_tag(run_id, STATUS_TAG, row.status)
        current = client.get_run(run_id)
        if row.error:
            client.set_tag(run_id, ERROR_TAG, row.error[:5000])
        elif ERROR_TAG in current.data.tags:  # a stopped trial whose Train run failed as it was ended
            client.delete_tag(run_id, ERROR_TAG)
        if current.info.status != final[row.status]:
            client.set_terminated(run_id, status=final[row.status])
