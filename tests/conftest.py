import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray Train's controller polls its workers every 2 s by default: on tiny test runs that
# polling is most of a fit's time (about 5 s of each fit here)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

import pytest  # noqa: E402
import torch  # noqa: E402

from pipeline.core.batch import make_batch  # noqa: E402,F401  (the tests import it from here)

# Unit tests run small tensors, where a second intra-op thread gains nothing and, on a
# loaded 2-core machine, oversubscription makes each op many times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    import ray
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=768 * 1024 * 1024,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def conv1d_encoder(enc, x: torch.Tensor) -> torch.Tensor:
    """A ``DemandEncoder`` computed with ``torch.nn.Conv1d`` the textbook way (causal padding, channels
    first), at the positions whose whole receptive field is in x: what it must equal."""
    h = x[:, None, :] if x.ndim == 2 else x.transpose(1, 2)
    for conv, d in zip(enc.convs, enc.dilations):
        h = torch.nn.functional.elu(conv(torch.nn.functional.pad(h, (d, 0))))
    return h.transpose(1, 2)[:, enc.receptive_field - 1:]
