import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray Train's controller polls its workers every 2 s by default: on tiny test runs that
# polling is most of a fit's time (about 5 s of each fit here)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pipeline.core.batch import batch_from_columns  # noqa: E402

# Unit tests run small tensors, where a second intra-op thread gains nothing and, on a
# loaded 2-core machine, oversubscription makes each op many times slower.
torch.set_num_threads(1)


def make_batch(demand, lead_time=0, h=1.0, p=4.0, c=0.0, price=0.0, mean=5.0, dist="poisson"):
    """A ProductBatch from a [B, N] demand array and per-product (or scalar) economics."""
    demand = np.asarray(demand, dtype=np.float32)
    if demand.ndim == 1:
        demand = demand[None, :]
    n = demand.shape[0]
    full = lambda v: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy()  # noqa: E731
    return batch_from_columns({
        "product_id": np.arange(n), "demand": demand,
        "holding_cost": full(h), "shortage_cost": full(p), "unit_cost": full(c), "price": full(price),
        "lead_time": full(lead_time).astype(int), "true_dist": np.array([dist] * n),
        "true_mean": full(mean), "true_shape": full(0.0)})


@pytest.fixture(scope="session")
def ray_session():
    import ray
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=768 * 1024 * 1024,
             log_to_driver=False)
    yield ray
    ray.shutdown()
