"""The MLflow model registry: a training job's or a sweep's policy registered as a new
version with the alias ``challenger`` (``jobs.promote`` decides whether it becomes the
``champion``), and finding the checkpoint behind a model URI (a file, ``runs:/``,
``models:/``). docs/mlflow.md, "Models: challenger and champion"."""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.mlflow_model import log_policy_model
from pipeline.adapters.tracking import KIND_TAG, RUN_NAME_TAG, tracking_uri
from pipeline.config import Config, ConfigError
from pipeline.reporting import logs

log = logs.get("model")

CHAMPION = "champion"      # what jobs.recommend and jobs.evaluate use by default; only jobs.promote moves it
CHALLENGER = "challenger"  # the latest version a training job or a sweep registered


def registered_model_name(cfg: Config) -> str:
    return cfg.mlflow.registered_model or f"sidbp-{cfg.problem.name}"


def register_challenger(client: MlflowClient, cfg: Config, run_id: str, model_id: str, tags: dict,
                        description: str) -> ModelVersion:
    """Register the logged model ``model_id`` (of run ``run_id``) as a new version of
    ``registered_model_name(cfg)`` with the alias ``challenger``; ``@champion`` is left
    where it is."""
    name = registered_model_name(cfg)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=(
            "Order policies trained with structure-informed DirectBackprop. @challenger: the latest version a "
            "training job or a sweep registered; @champion: the version `python -m jobs.promote` last promoted "
            "after comparing it with the champion before it (what jobs.recommend and jobs.evaluate use)."))
    version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                          tags={"model_id": model_id, **{k: str(v) for k, v in tags.items()}},
                                          description=description)
    # the logged model lists its versions (its page in the Models tab), as mlflow.register_model
    # records them; that function would need the process-wide registry URI set
    listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
        listed + [{"name": name, "version": version.version}])})
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    logs.get("mlflow").info(f"registered models:/{name}/{version.version} (alias @{CHALLENGER}); "
                            f"`python -m jobs.promote` compares it with @{CHAMPION}")
    return version


def register_training_run(client: MlflowClient, cfg: Config, run_id: str, model_id: str, table) -> ModelVersion:
    """A training job's logged model registered as the ``challenger``, described by its
    held-out evaluation (``table``: the learned policy's row)."""
    row = table.set_index("policy").loc["learned"]
    value = f"avg_{cfg.problem.objective}"
    return register_challenger(
        client, cfg, run_id, model_id, {"run_name": cfg.name, f"test_{value}": row[value]},
        f"Training run {cfg.name}: held-out {value} {row[value]:.4f}, violation rates "
        f"{row.violation_rate_in:.2%} in the visited states and {row.violation_rate_out:.2%} outside them.")


def register_sweep_best(client: MlflowClient, cfg: Config, best, value_col: str, checkpoint: Path,
                        sweep_run_id: str, data: Path) -> ModelVersion:
    """The best finished trial of a sweep (``best``: its row of the results table): its
    ``checkpoint`` logged to the trial's run as the MLflow model and registered as the
    ``challenger``; the sweep's run tagged with it."""
    model_id = log_policy_model(client.tracking_uri, best.run_id, checkpoint, data, cfg.eval.round_actions,
                                step=int(ckpt.load(checkpoint)["epoch"]))
    client.log_artifact(best.run_id, str(checkpoint), "checkpoint")
    tags = {"sweep": cfg.name, "trial": best.trial, value_col: best[value_col], "sweep_run_id": sweep_run_id}
    version = register_challenger(
        client, cfg, best.run_id, model_id, tags,
        f"Best finished trial {best.trial} of sweep {cfg.name}: {value_col} {best[value_col]:.4f}, "
        f"out-of-distribution violation rate {best.valid_out_violation_rate:.2%}.")
    client.set_tag(sweep_run_id, CHALLENGER, f"models:/{version.name}/{version.version}")
    return version


@dataclass
class ResolvedModel:
    checkpoint: Path  # the local checkpoint file
    uri: str          # what was asked for
    version: str      # what was used: models:/<name>/<version>, runs:/<run_id>, or file:<path>#sha256=...
    run_id: str | None


def default_model_uri(cfg: Config) -> str:
    """What ``model.uri: null`` means: the champion of ``registered_model_name(cfg)`` if
    there is one, else the latest finished training run named ``cfg.name`` (so that
    ``jobs.evaluate experiment=smoke`` follows ``jobs.train experiment=smoke``)."""
    name = registered_model_name(cfg)
    client = MlflowClient(tracking_uri(cfg))
    try:
        client.get_model_version_by_alias(name, CHAMPION)
        return f"models:/{name}@{CHAMPION}"
    except MlflowException:
        pass
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    query = f"tags.`{RUN_NAME_TAG}` = '{cfg.name}' and tags.`{KIND_TAG}` = 'train' and attributes.status = 'FINISHED'"
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=1) if exp else []
    if runs:
        log.info(f"no models:/{name}@{CHAMPION} registered; using the latest finished training run "
                 f"named {cfg.name!r}")
        return f"runs:/{runs[0].info.run_id}"
    return f"models:/{name}@{CHAMPION}"  # reported as not found, by name


def resolve_model(uri: str | None, cfg: Config) -> ResolvedModel:
    """The checkpoint behind ``model.uri``: a checkpoint file (or a folder holding
    ``checkpoint.pt``), ``runs:/<run_id>`` (that run's ``checkpoint`` artifact),
    ``models:/<name>@<alias>`` or ``models:/<name>/<version>``; ``None``: ``default_model_uri``.
    A model that cannot be found is a ``ConfigError`` naming it."""
    if uri is None:
        uri = default_model_uri(cfg)
    if not uri.startswith(("models:/", "runs:/")):
        path = Path(uri).expanduser()
        path = path / ckpt.FILE if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"model.uri {uri!r}: no checkpoint file there (expected a {ckpt.FILE} file or folder, "
                              "runs:/<run_id>, models:/<name>@<alias> or models:/<name>/<version>)")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        return ResolvedModel(path.resolve(), uri, f"file:{path.resolve()}#sha256={sha}", None)
    tracking = tracking_uri(cfg)
    client = MlflowClient(tracking)
    mlflow.set_tracking_uri(tracking)  # a version's models:/<model_id> source is looked up in the process's store
    try:
        if uri.startswith("models:/"):
            ref = uri[len("models:/"):]
            name, alias = ref.split("@", 1) if "@" in ref else (ref.rsplit("/", 1)[0], None)
            mv = (client.get_model_version_by_alias(name, alias) if alias
                  else client.get_model_version(name, ref.rsplit("/", 1)[1]))
            folder, version, run_id = mv.source, f"models:/{name}/{mv.version}", mv.run_id
        else:
            run_id = uri[len("runs:/"):].strip("/").split("/")[0]
            client.get_run(run_id)
            folder, version = f"runs:/{run_id}/checkpoint", f"runs:/{run_id}"
        local = Path(mlflow.artifacts.download_artifacts(folder, tracking_uri=tracking))
    except MlflowException as e:
        raise ConfigError(f"model.uri {uri!r} not found at {tracking}: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # a malformed models:/ reference
        raise ConfigError(f"model.uri {uri!r}: {e}") from None
    # a version registered from a logged model holds the checkpoint in its artifacts/
    found = [local] if local.is_file() else [local / ckpt.FILE, local / "artifacts" / ckpt.FILE]
    checkpoint = next((f for f in found if f.is_file()), found[0])
    if not checkpoint.is_file():
        raise ConfigError(f"model.uri {uri!r} has no {ckpt.FILE} (found {local})")
    return ResolvedModel(checkpoint, uri, version, run_id)


def load_model(cfg):
    """The policy behind ``cfg.model.uri`` (``tracking.resolve_model``), and ``cfg`` with the
    problem, policy and penalty of the config it was trained with (a policy is only
    meaningful on its own problem). Returns (policy, config, checkpoint state, resolved)."""
    resolved = resolve_model(cfg.model.uri, cfg)
    policy, trained, state = ckpt.load_policy(resolved.checkpoint)
    merged = copy.deepcopy(cfg)
    merged.problem, merged.policy, merged.penalty = trained.problem, trained.policy, trained.penalty
    return policy, merged, state, resolved
