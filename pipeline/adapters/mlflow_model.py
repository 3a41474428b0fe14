"""The policy as an MLflow Model: a pyfunc around a checkpoint, so that
``mlflow.pyfunc.load_model``, ``mlflow models serve`` and any generic scoring tool can
compute orders from a table of products (docs/mlflow.md, "The policy as an MLflow model").

In: one row per product, as ``jobs.recommend`` reads it: ``product_id``, ``demand`` (the
history, a list), ``lead_time``, the cost columns, any problem-parameter or feature
columns the data has, and the state columns (``on_hand``, ``pipeline_1``, ...). Out: the
rows ``batch_inference.order_table`` computes, the same as ``jobs.recommend`` writes.
The parameter ``state`` (``columns`` or ``simulate``) says where the state comes from.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import ColSpec, Schema
from mlflow.pyfunc import PythonModel

import pipeline
from pipeline.adapters import checkpoint as ckpt
from pipeline.adapters.batch_inference import STATES, order_table, simulated_state
from pipeline.config import CONF_DIR
from pipeline.core.batch import batch_from_columns
from pipeline.core.problems import get_problem

NAME = "policy"  # the logged model's name in its run: runs:/<run_id>/policy
GROUND_TRUTH = ("true_dist", "true_mean", "true_shape")  # synthetic data only; no policy reads them
REQUIREMENTS = ("torch", "numpy", "pandas", "pyarrow", "omegaconf", "mlflow")


class PolicyModel(PythonModel):
    """The order policy of the checkpoint in the model's artifacts, with its problem."""

    def load_context(self, context):
        self.policy, cfg, saved = ckpt.load_policy(Path(context.artifacts["checkpoint"]))
        self.problem = get_problem(cfg.problem.name, cfg.problem.params)
        self.width = saved["state_width"]
        self.config = dict(context.model_config or {})

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        state = (params or {}).get("state", "columns")
        if state not in STATES:
            raise ValueError(f"params.state {state!r}: one of {', '.join(STATES)}")
        cols = columns(model_input)
        return order_table(self.problem, self.policy, self.width, cols, state,
                           self.config.get("round_actions", True), self.config.get("version", ""),
                           "the model input").to_pandas()


def columns(frame: pd.DataFrame) -> dict:
    """A DataFrame of products as the dict of numpy columns the core reads (list columns
    such as ``demand`` as 2-D arrays)."""
    return {c: (np.stack([np.asarray(v, dtype=np.float64) for v in frame[c]]) if len(frame)
                and isinstance(frame[c].iloc[0], (list, tuple, np.ndarray)) else frame[c].to_numpy())
            for c in frame.columns}


def input_example(data: Path, model: PolicyModel, rows: int = 2) -> pd.DataFrame:
    """The first ``rows`` products of the Parquet ``data`` with the state columns a
    request carries (the state ``model``'s policy ends each history in), ground truth dropped."""
    frame = pads.dataset(str(data), format="parquet").head(rows).to_pandas()
    frame = frame.drop(columns=[c for c in GROUND_TRUTH if c in frame.columns])
    frame["demand"] = [np.asarray(v, dtype=np.float64).tolist() for v in frame["demand"]]
    problem, width = model.problem, model.width
    state = simulated_state(problem, model.policy, batch_from_columns(columns(frame)), width, problem.discrete)
    for i, name in enumerate(problem.state_names(width)):
        frame[name] = state[:, i].double().numpy()
    return frame


def log_policy_model(tracking_uri: str, run_id: str, checkpoint: Path, data: Path, round_actions: bool,
                     step: int = 0) -> str:
    """Log ``checkpoint`` to run ``run_id`` as the pyfunc model ``policy`` (signature and
    input example from the Parquet ``data``, the project's code with it) and return its
    MLflow 3 model id. The run's metrics at ``step`` (the checkpoint's epoch) are linked to
    it; log more with ``model_id``."""
    mlflow.set_tracking_uri(tracking_uri)  # Model.log reads the fluent tracking URI
    config = {"round_actions": round_actions, "version": f"runs:/{run_id}/{NAME}"}
    model = PolicyModel()
    model.load_context(_Context({"checkpoint": str(checkpoint)}, config))
    example = input_example(data, model)
    output = model.predict(None, example)
    with warnings.catch_warnings():  # product ids and lead times are integers and never missing
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        inferred = infer_signature(example, output, params={"state": "columns"})
    state_names = set(model.problem.state_names(model.width))  # not needed with params.state=simulate
    signature = ModelSignature(Schema([ColSpec(c.type, c.name, required=c.name not in state_names)
                                       for c in inferred.inputs.inputs]), inferred.outputs, inferred.params)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    # created here, in the run's experiment (Model.log alone would use the fluent default experiment)
    logged = client.create_logged_model(run.info.experiment_id, name=NAME, source_run_id=run_id,
                                        params=run.data.params, model_type="order-policy")
    info = Model.log(None, mlflow.pyfunc, name=NAME, run_id=run_id, step=step, model_id=logged.model_id,
                     python_model=str(Path(__file__).with_name("policy_model_code.py")),  # code, not a pickle
                     artifacts={"checkpoint": str(checkpoint)}, signature=signature, input_example=example,
                     model_config=config,
                     code_paths=code_paths(),
                     pip_requirements=[_pinned(p) for p in REQUIREMENTS])
    return info.model_id


def code_paths() -> list[str]:
    """The project's code and its configs (which rebuilding a policy from its checkpoint
    reads), saved with the model so that it loads where the project is not installed."""
    package = Path(pipeline.__file__).parent
    return [str(package)] + ([] if CONF_DIR.is_relative_to(package) else [str(CONF_DIR)])


class _Context:
    def __init__(self, artifacts: dict, model_config: dict):
        self.artifacts, self.model_config = artifacts, model_config


def _pinned(package: str) -> str:
    from importlib.metadata import version
    return f"{package}=={version(package).split('+')[0]}"
