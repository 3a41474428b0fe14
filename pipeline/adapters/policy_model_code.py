"""The code MLflow saves as the policy model (MLflow's "models from code"): loading the
model runs this file, so nothing is unpickled (``mlflow_model.PolicyModel``)."""
from mlflow.models import set_model

from pipeline.adapters.mlflow_model import PolicyModel

set_model(PolicyModel())
