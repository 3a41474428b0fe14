"""Config loading, overrides and the one-line errors a user sees."""
import subprocess
import sys

import pytest

from pipeline.config import CONF_DIR, PROJECT_ROOT, ConfigError, flatten, load_config


def test_defaults_load_from_yaml_into_typed_tree():
    cfg = load_config([])
    assert cfg.problem.name == "lost_sales"
    assert cfg.policy.dilations == [1, 2, 4, 8, 16] and cfg.policy.window == 32
    assert isinstance(cfg.train.lr, float) and isinstance(cfg.train.epochs, int)


def test_overrides_and_group_files_merge_in_order():
    cfg = load_config(["experiment=smoke", "train.epochs=7", "data.lead_time_range=[1,3]"])
    assert cfg.name == "smoke" and cfg.data.num_products == 60  # from the smoke file
    assert cfg.train.epochs == 7 and cfg.data.lead_time_range == [1, 3]
    assert flatten(cfg)["train.epochs"] == "7"


def test_every_experiment_file_is_valid():
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        load_config([f"experiment={path.stem}"])


@pytest.mark.parametrize("args, message", [
    (["train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["trian.lr=0.1"], "unknown config key 'trian"),
    (["train.epochs=many"], "'train.epochs'"),
    (["train.use_gpu=maybe"], "'train.use_gpu'"),
    (["problem.discount=1.5"], "problem.discount must be in (0, 1]"),
    (["data.lead_time_range=[2,1]"], "data.lead_time_range must have low <= high"),
    (["data.lead_time_range=[-1,1]"], "data.lead_time_range must be >= 0"),
    (["problem.name=queueing"], "problem.name must be one of lost_sales"),
    (["experiment=nope"], "unknown experiment 'nope'; known: "),
    (["policy.dilations=[1,2]"], "policy.dilations must add up to policy.window - 1"),
    (["train.horizon=500"], "train.horizon plus train.history must fit"),
    (["lr"], "expected key=value"),
    (["problem.params.shelf_lfe=2"], "problem.params: problem lost_sales has no parameter 'shelf_lfe'"),
    (['penalty.properties=["-1 <= dorder/dfoo <= 0"]'],
     "penalty.properties: -1 <= dorder/dfoo <= 0: no state entry 'foo'"),
    (['penalty.properties=["nonsense"]'], "penalty.properties: cannot read property 'nonsense'"),
    (["penalty.weights=[1,2]"], "penalty.weights must be one weight >= 0 or one per property (3)"),
    (["penalty.probe_share=1.5"], "penalty.probe_share must be in [0, 1]"),
    (["data.cache_mib=-1"], "data.cache_mib must be >= 0 (0: stream every epoch), got -1"),
])
def test_user_mistakes_give_one_line_naming_the_key(args, message):
    with pytest.raises(ConfigError) as err:
        load_config(args)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_command_line_error_exits_2_without_traceback():
    out = subprocess.run([sys.executable, "-m", "jobs.train", "train.lrr=0.1"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip() == ("config error: unknown config key 'train.lrr' (from command line 'train.lrr=0.1'); "
                                  "train has: epochs, batch_size, windows_per_batch, lr, lr_final_fraction, history, "
                                  "horizon, warmup, grad_clip, round_actions, stock_at_cost, num_workers, use_gpu, "
                                  "cpus_per_worker, checkpoint_every, max_failures, keep")


def test_saved_config_without_newer_keys_still_loads():
    from omegaconf import OmegaConf

    from pipeline.config import from_yaml, to_yaml

    saved = OmegaConf.create(to_yaml(load_config(["train.epochs=3"])))
    del saved["benchmark"]  # as saved before the benchmark section existed
    cfg = from_yaml(OmegaConf.to_yaml(saved))
    assert cfg.train.epochs == 3 and cfg.benchmark.suite == "lost_sales"


@pytest.mark.parametrize("arg, message", [
    ("train.lrr=0.1", "unknown config key 'train.lrr' (from command line 'train.lrr=0.1'); train has: epochs, "),
    ("colour=red", "unknown config key 'colour' (from command line 'colour=red'); the config has: name, seed, "),
    ("train.epochs=many", "bad value for 'train.epochs' (from command line 'train.epochs=many'): Value 'many' of "
                          "type 'str' could not be converted to Integer"),
    ("data.lead_time_range=[-1,2]", "data.lead_time_range must be >= 0.0, got [-1, 2]"),
    ("problem.discount=1.2", "problem.discount must be in (0, 1], got 1.2"),
    ("problem.name=backorders", "problem.name must be one of lost_sales, perishable, dual_sourcing, removal, "
                                "got 'backorders'"),
    ("problem=backorders", "unknown problem 'backorders'; known: dual_sourcing, lost_sales, perishable, removal"),
    ("policy.kind=rnn", "policy.kind must be cnn or mlp, got 'rnn'"),
    ("train.grad_clip=-1", "train.grad_clip must be >= 0, got -1"),
])
def test_every_invalid_value_names_the_key_and_what_is_allowed(arg, message):
    with pytest.raises(ConfigError) as err:
        load_config([arg])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
