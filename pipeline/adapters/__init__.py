"""Platform adapters: Ray (session, Train, Tune, batch inference) and MLflow (tracking,
registry), and the checkpoints they pass around. Everything Ray- or MLflow-specific lives here.
"""
import os

# read by Ray Data at import time, and inherited by a local Ray's workers
# (Ray Train's print patch would echo each worker line twice next to MLflow's stdout wrapper;
# its Prometheus metrics have no dashboard to go to in a local Ray)
for _k, _v in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
               "RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
               "RAY_TRAIN_METRICS_ENABLED": "0"}.items():
    os.environ.setdefault(_k, _v)
