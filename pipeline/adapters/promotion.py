"""Gated promotion: the registered model's ``@challenger`` against its ``@champion`` on the
same held-out products and demand paths; ``@champion`` moves only when the challenger is
better by ``promote.margin`` and no worse on the structure-violation rates
(``promote.violation_tolerance``). The comparison is recorded on the challenger's version
(tags, description) and as an MLflow run of kind ``promote``. docs/mlflow.md, "Models:
challenger and champion"."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.adapters.registry import CHALLENGER, CHAMPION, load_model, registered_model_name
from pipeline.adapters.tracking import Tracker
from pipeline.config import Config, ConfigError, required_periods, resolve_path
from pipeline.core.evaluation import format_table, held_out_report
from pipeline.core.problems import get_problem
from pipeline.data.parquet import read_products
from pipeline.data.synthetic import materialize
from pipeline.reporting import logs

RATES = ("violation_rate_in", "violation_rate_out")
DECISION_TAG = "promotion.decision"  # on the challenger's version: promoted | rejected


@dataclass
class Decision:
    promote: bool
    reasons: list[str]  # why, one line per criterion
    change: float       # the challenger's objective relative to the champion's (+: better)


def decide(champion: pd.Series, challenger: pd.Series, objective: str, margin: float,
           tolerance: float) -> Decision:
    """Whether ``challenger`` (a row of the evaluation table: ``avg_<objective>`` and the
    violation rates) should replace ``champion``: its objective better by at least
    ``margin`` (a fraction of the champion's) and each violation rate at most the
    champion's plus ``tolerance``."""
    value = f"avg_{objective}"
    ref = abs(champion[value])
    change = ((champion[value] - challenger[value]) if objective == "cost"
              else (challenger[value] - champion[value])) / ref
    better = change >= margin
    reasons = [f"{value}: {challenger[value]:.4f} against {champion[value]:.4f}, {change:+.2%} "
               f"({'better' if change > 0 else 'not better'}; the margin is {margin:.2%})"]
    rates_ok = True
    for rate in RATES:
        ok = challenger[rate] <= champion[rate] + tolerance
        rates_ok &= ok
        reasons.append(f"{rate}: {challenger[rate]:.4f} against {champion[rate]:.4f} "
                       f"({'within' if ok else 'above'} the champion's + {tolerance:g})")
    return Decision(bool(better and rates_ok), reasons, float(change))


@dataclass
class PromotionOutcome:
    name: str
    challenger: ModelVersion
    champion: ModelVersion | None  # before the decision; None: there was none
    decision: Decision
    table: pd.DataFrame | None     # the comparison (None without a champion)
    run_id: str
    tracker: Tracker


def alias(client: MlflowClient, name: str, which: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, which)
    except MlflowException:
        return None


def promote(cfg: Config) -> PromotionOutcome:
    """Compare ``@challenger`` with ``@champion`` of ``registered_model_name(cfg)`` on the
    test split of ``cfg.data`` and move ``@champion`` when ``decide`` says so."""
    started = time.time()
    tracker = Tracker(cfg)
    client, name = tracker.client, registered_model_name(cfg)
    challenger, champion = alias(client, name, CHALLENGER), alias(client, name, CHAMPION)
    if challenger is None:
        raise ConfigError(f"models:/{name} has no @{CHALLENGER} at {tracker.uri}: a training job (mlflow.register) "
                          "or a sweep registers one")
    if champion is not None and champion.version == challenger.version:
        raise ConfigError(f"models:/{name}/{challenger.version} is both @{CHALLENGER} and @{CHAMPION}: "
                          "nothing to compare")
    models = {"challenger": model_config(cfg, name, challenger)}
    if champion is not None:
        models["champion"] = model_config(cfg, name, champion)
    policies = {k: v[0] for k, v in models.items()}
    trained, width = models["challenger"][1], models["challenger"][2]["state_width"]
    if champion is not None:
        other, other_width = models["champion"][1], models["champion"][2]["state_width"]
        if (other.problem.name, dict(other.problem.params or {}), other_width) != \
                (trained.problem.name, dict(trained.problem.params or {}), width):
            raise ConfigError(f"models:/{name}: the champion (v{champion.version}: {other.problem.name}, "
                              f"{other_width}-entry state) and the challenger (v{challenger.version}: "
                              f"{trained.problem.name}, {width}-entry state) are not for the same problem")
    problem = get_problem(trained.problem.name, trained.problem.params)
    run_cfg = copy.deepcopy(trained)
    run_cfg.name = f"promote-{name}-v{challenger.version}"
    run_cfg.eval.baselines = []  # the two policies only, on the same demand paths
    out_dir = resolve_path(run_cfg.output_dir)
    splits = materialize(run_cfg.data, run_cfg.seed, out_dir, required_periods(run_cfg), problem)
    tags = {"registered_model": name, "challenger_version": challenger.version,
            "champion_version": champion.version if champion else "none"}
    run_id = tracker.start(run_cfg, kind="promote", data=splits["test"].parent, resume=False, tags=tags)
    with tracker.ending():
        if champion is None:
            decision, table = Decision(True, [f"no @{CHAMPION} yet: the first challenger becomes the champion"],
                                       float("nan")), None
        else:
            log = logs.get("promote")
            log.info(f"v{challenger.version} (@{CHALLENGER}) against v{champion.version} (@{CHAMPION}) on the "
                     f"test products of {splits['test'].parent} ...")
            table, _, _ = held_out_report(run_cfg, problem, policies, read_products(splits["train"]),
                                          read_products(splits["test"]), width)
            rows = table.set_index("policy")
            objective = run_cfg.problem.objective
            decision = decide(rows.loc["champion"], rows.loc["challenger"], objective, cfg.promote.margin,
                              cfg.promote.violation_tolerance)
            tracker.log_table(table, "comparison")
            tracker.log_metrics({f"{who}/{k}": rows.loc[who, k] for who in ("champion", "challenger")
                                 for k in (f"avg_{objective}", *RATES)} | {"objective_change": decision.change})
        record(client, tracker, name, challenger, champion, decision, cfg, run_id)
        tracker.log_metrics({"promoted": float(decision.promote), "wall_seconds": time.time() - started})
    return PromotionOutcome(name, challenger, champion, decision, table, run_id, tracker)


def model_config(cfg: Config, name: str, version: ModelVersion):
    """(policy, trained config, checkpoint state) of one registered version."""
    asked = copy.deepcopy(cfg)
    asked.model.uri = f"models:/{name}/{version.version}"
    policy, trained, state, _ = load_model(asked)
    return policy, trained, state


def record(client: MlflowClient, tracker: Tracker, name: str, challenger: ModelVersion,
           champion: ModelVersion | None, decision: Decision, cfg: Config, run_id: str) -> None:
    """The decision on the challenger's version (tags and a line of its description), on the
    promotion run (tags and its description), and the alias moved when promoted."""
    verdict = "promoted" if decision.promote else "rejected"
    against = f"v{champion.version}" if champion else "no champion"
    line = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {verdict} against {against} "
            f"(promotion run {run_id}): " + "; ".join(decision.reasons))
    client.update_model_version(name, challenger.version,
                                description=((challenger.description or "").rstrip() + "\n\n" + line).strip())
    for k, v in {DECISION_TAG: verdict, "promotion.run_id": run_id, "promotion.compared_with": against,
                 "promotion.objective_change": f"{decision.change:+.4%}" if champion else "none (no champion)",
                 "promotion.margin": cfg.promote.margin,
                 "promotion.violation_tolerance": cfg.promote.violation_tolerance}.items():
        client.set_model_version_tag(name, challenger.version, k, str(v))
    client.set_tag(run_id, "decision", verdict)
    client.set_tag(run_id, "mlflow.note.content", f"**promote** models:/{name}: v{challenger.version} "
                   f"(@{CHALLENGER}) {verdict} against {against}.\n\n" + "\n".join(f"- {r}" for r in decision.reasons))
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
        client.delete_registered_model_alias(name, CHALLENGER)
    logs.get("mlflow").info(f"models:/{name}/{challenger.version} {verdict}; @{CHAMPION} is "
                            f"v{challenger.version if decision.promote else champion.version}")


def summary(outcome: PromotionOutcome) -> str:
    d = outcome.decision
    head = (f"models:/{outcome.name}: v{outcome.challenger.version} (@{CHALLENGER}) "
            f"{'PROMOTED to @' + CHAMPION if d.promote else 'not promoted'}"
            + (f" against v{outcome.champion.version}" if outcome.champion else ""))
    table = f"\n{format_table(outcome.table)}" if outcome.table is not None else ""
    return head + table + "\n" + "\n".join(f"  {r}" for r in d.reasons)
