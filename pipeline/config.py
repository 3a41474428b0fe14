"""One typed configuration tree.

The schema (types, and what each key means) is the dataclasses below; the values live in
``conf/config.yaml``, so there is one place to read every default. A job's config is
``conf/config.yaml``, then any group files named on the command line (``experiment=smoke``
reads ``conf/experiment/smoke.yaml``), then ``key=value`` overrides, validated into these
dataclasses. User mistakes raise ``ConfigError`` with a one-line message.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from pipeline.core.penalty import penalty_properties
from pipeline.core.problems import PROBLEMS, get_problem
from pipeline.data.retail import validate_retail
from pipeline.errors import ConfigError, check, check_at_least, check_range

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout (site-packages when installed from a wheel)
# The configs: conf/ at the top of the checkout; a wheel ships the same files as package data in
# pipeline/conf (pyproject.toml maps conf/ there), and that folder exists only in an installed copy.
# So: the installed copy when there is one, else the checkout's conf/ (source tree, editable install,
# a Ray job's working_dir).
_INSTALLED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = _INSTALLED_CONF if (_INSTALLED_CONF / "config.yaml").is_file() else PROJECT_ROOT / "conf"


@dataclass
class ProblemConfig:
    name: str = MISSING            # lost_sales, perishable, dual_sourcing, removal
    objective: str = MISSING       # cost: minimise costs; reward: maximise revenue - costs
    discount: float = MISSING      # per-period discount factor in (0, 1]
    params: Dict[str, Any] = field(default_factory=dict)  # the problem's own parameters (conf/problem/NAME.yaml)


@dataclass
class DataConfig:
    path: Optional[str] = None     # folder with train/ valid/ test/ Parquet shards; null: synthetic
    num_products: int = MISSING
    periods: int = MISSING         # history length of every product
    distributions: List[str] = MISSING  # poisson, negbin, zip (zero-inflated), gamma (discretised), uniform
    mean_range: List[float] = MISSING   # demand mean, drawn log-uniformly
    negbin_shape_range: List[float] = MISSING
    zero_prob_range: List[float] = MISSING
    gamma_cv_range: List[float] = MISSING  # discretised gamma: coefficient of variation
    holding_cost_range: List[float] = MISSING
    shortage_cost_range: List[float] = MISSING
    unit_cost_range: List[float] = MISSING
    price_range: List[float] = MISSING
    lead_time_range: List[int] = MISSING   # inclusive
    valid_fraction: float = MISSING
    test_fraction: float = MISSING
    shard_rows: int = MISSING
    cache_mib: int = MISSING       # keep a split in Ray's object store when at most this many MiB (0: stream)


@dataclass
class PolicyConfig:
    kind: str = MISSING            # cnn (docs/policy.md) or mlp (no demand encoder)
    window: int = MISSING          # periods of demand the CNN sees
    channels: int = MISSING
    dilations: List[int] = MISSING
    hidden: List[int] = MISSING
    features: List[str] = MISSING  # covariates of the data (feature_<name> columns) the policy reads
    feature_lookahead: int = MISSING  # periods of known-ahead features at each decision (t .. t+k-1)
    structure: str = MISSING       # free, or by_construction: slopes in the state obey the problem's
                                   # properties by the network's form (docs/policy.md)
    terms: int = MISSING           # by_construction: smoothed base-stock terms mixed per action


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING      # products per step (per worker)
    windows_per_batch: int = MISSING  # steps on each batch of products, each on a new time window
    lr: float = MISSING
    lr_final_fraction: float = MISSING  # cosine decay from lr to lr * this
    history: int = MISSING         # earliest rollout start: periods of history before it
    horizon: int = MISSING         # periods per rollout
    warmup: int = MISSING          # first periods left out of the loss
    grad_clip: float = MISSING     # max gradient norm; 0 disables
    round_actions: bool = MISSING  # train (and validate) on whole-unit orders of a discrete problem, the
                                   # gradient passed straight through the rounding (docs/policy.md)
    stock_at_cost: bool = MISSING  # reward objective: stock valued at unit cost, so a warm-up's purchases are not
                                   # free (false: revenue minus cost per period, for comparison; docs/favorita.md)
    num_workers: int = MISSING     # Ray Train workers; 0 runs in the driver process
    use_gpu: bool = MISSING
    cpus_per_worker: int = MISSING
    checkpoint_every: int = MISSING  # epochs between checkpoints
    max_failures: int = MISSING      # worker-group restarts from the last checkpoint before the run fails
    keep: str = MISSING              # the policy a run keeps: best_valid (its best validation epoch) or last


@dataclass
class PenaltyConfig:
    properties: List[str] = MISSING  # structural properties to enforce (empty: the problem's defaults)
    weights: List[float] = MISSING   # one weight per property, or one for all; 0 disables the penalty
    probe_share: float = MISSING     # share of the penalised states drawn outside the visited region
    probe_widen: float = MISSING     # probe box: 0 .. this x the largest visited value of each coordinate
    ramp_epochs: float = MISSING     # the weights grow linearly from 0 over this many epochs (0: at once)
    shock_share: float = MISSING     # weight of probes in the context after a demand shock (0: none; docs/sipn.md)
    shock_factors: List[float] = MISSING  # [low, high]: the shock's factor, log-uniform, drawn per product
    shock_max_lag: int = MISSING     # the shock starts 1 .. this many periods before the penalised one


@dataclass
class EvalConfig:
    start: int = MISSING           # evaluation rollouts run from this period to the end
    warmup: int = MISSING
    round_actions: bool = MISSING  # whole-unit orders where the problem is discrete
    baselines: List[str] = MISSING  # dp, omniscient, estimated, best_constant
    omniscient_sim_periods: int = MISSING
    plot_products: int = MISSING


@dataclass
class RobustnessConfig:
    shocks: List[str] = MISSING    # demand shocks to evaluate under: up, down, spike
    shock_at: int = MISSING        # scored period at which a shock starts
    up_factor: float = MISSING     # level shift up: demand x this from shock_at on
    down_factor: float = MISSING   # level shift down: demand x this from shock_at on
    spike_factor: float = MISSING  # one-week spike: demand x this in period shock_at only
    initial_multiples: List[float] = MISSING  # unusual starts: every state entry = k x mean demand


@dataclass
class SipnConfig:
    seeds: List[int] = MISSING     # python -m jobs.sipn: every policy is trained once per seed (data and weights)
    policies: List[str] = MISSING  # plain, penalized, by_construction (plain first: the others are compared with it)
    results: str = MISSING         # folder of sipn.csv and sipn_time.csv (relative: to the current folder)
    slice_multiple: float = MISSING  # the violation map's slice: 0 .. this x mean demand per state entry


@dataclass
class SweepConfig:
    num_samples: int = MISSING     # trials
    max_concurrent_trials: int = MISSING
    weight_range: List[float] = MISSING  # penalty weights: log-uniform on [low, high]
    weights_per_property: bool = MISSING  # one weight per property (else one for all)
    lr_range: List[float] = MISSING      # learning rate: log-uniform on [low, high]
    grace_period: int = MISSING    # ASHA: epochs before a trial may be stopped
    reduction_factor: int = MISSING  # ASHA: keep the best 1/this at each rung


@dataclass
class BenchmarkConfig:
    suite: str = MISSING           # a suite of pipeline/benchmarks (suite=NAME reads conf/suite/NAME.yaml), or all
    policies: List[str] = MISSING  # the suite's policies to run (empty: all); dp is the exact optimum
    results_dir: str = MISSING     # <results_dir>/<suite>.csv
    docs: str = MISSING            # markdown report of every suite's results
    figures: str = MISSING         # the report's figures (gaps by instance; the learned rows' curves and policies)
    eval_products: int = MISSING   # learned rows: held-out products per evaluation batch (docs/benchmarks.md)
    max_eval_products: int = MISSING  # ... batches added until the paired gap's standard error is at most
    max_se_pct: float = MISSING    # ... this many percentage points, or this many products are used
    eval_history: int = MISSING    # ... periods of demand history before a path's first decision
    eval_warmup: int = MISSING     # ... periods from an empty system before scoring (average-cost suites)
    eval_periods: int = MISSING    # ... periods scored per path


@dataclass
class PrepareConfig:
    source: str = MISSING          # favorita (raw Kaggle CSVs), favorita_weekly (long sales Parquet), synthetic_retail
    input: Optional[str] = None    # raw folder (favorita) or sales Parquet file/folder (favorita_weekly)
    output: Optional[str] = None   # null: <output_dir>/data/<source>-<frequency>
    frequency: str = MISSING       # weekly or daily periods
    buckets: int = MISSING         # hash partitions of the series: memory per task ~ rows / buckets


@dataclass
class RetailConfig:
    num_series: int = MISSING
    periods: int = MISSING
    frequency: str = MISSING       # weekly or daily
    start_date: str = MISSING      # date of period 0 (ISO)
    mean_range: List[float] = MISSING        # base demand per period, log-uniform
    dispersion_range: List[float] = MISSING  # negative binomial shape k (larger: closer to Poisson)
    slow_mover_share: float = MISSING        # share of intermittent series
    slow_mover_zero_range: List[float] = MISSING  # their probability of a zero period
    trend_range: List[float] = MISSING       # relative change of the level per year
    yearly_amplitude_range: List[float] = MISSING  # yearly seasonality (relative)
    weekly_amplitude_range: List[float] = MISSING  # day-of-week seasonality (daily only)
    christmas_lift_range: List[float] = MISSING    # extra demand in the Christmas period (relative)
    promo_prob: float = MISSING    # share of periods on promotion
    promo_lift_range: List[float] = MISSING
    shock_share: float = MISSING   # share of series hit by the shock
    shock_period: int = MISSING    # period the shock starts (like the 2016 earthquake)
    shock_length: int = MISSING    # periods of the spike before recovery
    shock_lift_range: List[float] = MISSING


@dataclass
class RetailExperimentConfig:
    source: str = MISSING          # synthetic (retail.*) or a path, see data_path
    data_path: Optional[str] = None  # Parquet (file or folder): series layout, or series_id,store,item,week,units
    output_dir: str = MISSING      # summary.csv, weekly.csv, plots (relative: to the current folder)
    docs: Optional[str] = None     # markdown report to write this run's section into (null: none)
    lead_times: List[int] = MISSING  # a comparison at each; 0 is the paper's setting
    folds: int = MISSING           # disjoint groups of the data's stores (sorted, contiguous); 1: every store at once
    fold: Optional[int] = None     # run this fold only (0 .. folds-1); null: every fold
    seeds: List[int] = MISSING     # a run per seed and fold; empty: the top-level seed only
    test_periods: int = MISSING    # the last periods of the data (to test_end) are the test ...
    valid_periods: int = MISSING   # ... and the ones before them the validation
    train_end: Optional[int] = None  # training rollouts and forecaster fit use periods < train_end; null: from valid_periods
    valid_end: Optional[int] = None  # validation scores periods [train_end, valid_end); null: from test_periods
    test_end: Optional[int] = None  # test scores periods [valid_end, test_end); null: to the end
    price: float = MISSING         # per unit sold (every series)
    unit_cost: float = MISSING     # per unit ordered
    holding_cost: float = MISSING  # per unit left at the end of a period
    policies: List[str] = MISSING  # directbackprop, directbackprop_sipn, pto_mqcnn, pto_moving_average
    headline: str = MISSING        # the DirectBackprop policy the report's verdict is about (fixed before the runs)
    quantiles: List[float] = MISSING  # forecaster quantile levels (the critical fractile is added)
    curve_levels: List[float] = MISSING  # MQ-CNN pipeline scored again at these service levels (its
                                         # inventory / fill-rate curve; fitted as quantiles too)
    forecast_epochs: int = MISSING
    forecast_lr: float = MISSING
    moving_average_window: int = MISSING
    plot_series: int = MISSING


@dataclass
class RayConfig:
    address: Optional[str] = None  # null: start a local Ray in-process (or use RAY_ADDRESS)
    num_cpus: Optional[int] = None


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # null: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db (in the current folder)
    experiment: str = MISSING
    registered_model: Optional[str] = None  # null: sidbp-<problem.name>
    register: bool = MISSING                # jobs.train registers its policy as @challenger (a sweep always does)


@dataclass
class ModelConfig:
    uri: Optional[str] = None  # checkpoint file, runs:/<run_id>, models:/<name>@<alias> or /<version>


@dataclass
class RecommendConfig:
    input: Optional[str] = None    # Parquet file or folder of product histories; null: the data's test split
    output: Optional[str] = None   # Parquet folder; null: <output_dir>/<name>/recommendations
    state: str = MISSING           # columns (the data's state columns) | simulate (run the policy through the history)
    batch_size: int = MISSING      # products per map_batches call
    concurrency: int = MISSING     # Ray Data actors, each holding the policy


@dataclass
class PromoteConfig:
    margin: float = MISSING               # the challenger's objective must beat the champion's by this fraction
    violation_tolerance: float = MISSING  # and its violation rates be at most the champion's plus this


@dataclass
class CompareConfig:
    runs: int = MISSING            # newest runs shown
    kind: Optional[str] = None     # only runs of this kind (train, evaluate, sweep, trial); null: all
    metrics: list[str] = field(default_factory=list)  # columns; empty: the standard set


@dataclass
class Config:
    name: str = MISSING            # run name; running again with the same name resumes
    seed: int = MISSING
    output_dir: str = MISSING      # data, checkpoints and results (relative: to the current folder)
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    data: DataConfig = field(default_factory=DataConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    sipn: SipnConfig = field(default_factory=SipnConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    retail: RetailConfig = field(default_factory=RetailConfig)
    favorita: RetailExperimentConfig = field(default_factory=RetailExperimentConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


BASELINES = ("dp", "omniscient", "estimated", "best_constant")
RECOMMEND_STATES = ("columns", "simulate")
RUN_KINDS = ("train", "evaluate", "sweep", "trial", "favorita", "benchmark", "sipn", "promote")
DISTRIBUTIONS = ("poisson", "negbin", "zip", "gamma", "uniform")
SHOCKS = ("up", "down", "spike")
PREPARE_SOURCES = ("favorita", "favorita_weekly", "synthetic_retail")
FAVORITA_SOURCES = ("synthetic", "favorita_weekly")
FAVORITA_POLICIES = ("directbackprop", "directbackprop_sipn", "pto_mqcnn", "pto_moving_average")
FREQUENCIES = ("weekly", "daily")


def _load_yaml(path: Path):
    try:
        return OmegaConf.load(path)
    except Exception as e:  # a YAML syntax error in a user's file
        raise ConfigError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


def known_keys(key: str) -> str:
    """``"<section> has: a, b, c"`` for the section of the dotted ``key`` (the top level when
    the section itself is unknown)."""
    node, prefix = OmegaConf.structured(Config), ""
    for part in key.split(".")[:-1]:
        if part not in node or not OmegaConf.is_dict(node[part]):
            break
        node, prefix = node[part], f"{prefix}{part}."
    return f"{prefix.rstrip('.') or 'the config'} has: {', '.join(str(k) for k in node.keys())}"


def _explain(e: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(e, "full_key", None) or ""
    first = str(e).splitlines()[0]
    if isinstance(e, ConfigKeyError) or "not in" in first:
        return ConfigError(f"unknown config key {key!r} (from {source}); {known_keys(key)}")
    if isinstance(e, ValidationError):
        return ConfigError(f"bad value for {key!r} (from {source}): {first}")
    return ConfigError(f"config error at {key!r} (from {source}): {first}")


def load_config(args: list[str] | None = None, conf_dir: Path = CONF_DIR) -> Config:
    """Merge conf/config.yaml, group files and key=value overrides into a validated Config."""
    args = list(args or [])
    cfg = OmegaConf.structured(Config)
    layers = [(str(conf_dir / "config.yaml"), _load_yaml(conf_dir / "config.yaml"))]
    overrides = []
    groups = [p.name for p in conf_dir.iterdir() if p.is_dir()]
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        if key in groups:
            path = conf_dir / key / f"{value}.yaml"
            if not path.exists():
                known = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
                raise ConfigError(f"unknown {key} {value!r}; known: {', '.join(known)}")
            layers.append((str(path), _load_yaml(path)))
            if key == "problem":
                overrides.append(f"problem.name={value}")
        else:
            overrides.append(arg)
    layers += [(f"command line {item!r}", [item]) for item in overrides]  # dotlists, parsed in the merge
    for source, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(layer) if isinstance(layer, list) else layer)
        except OmegaConfBaseException as e:
            raise _explain(e, source) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config key {missing[0]!r} has no value")
    config: Config = OmegaConf.to_object(cfg)
    absolute_paths(config)
    validate(config)
    return config


# The config's file and folder keys. Relative values are taken from the driver's current folder
# and made absolute once, by load_config, so that the config a run saves and hands to Ray
# workers (which run in folders of their own) names the same places.
PATH_KEYS = ("output_dir", "data.path", "benchmark.results_dir", "benchmark.docs", "benchmark.figures",
             "prepare.input", "prepare.output", "favorita.data_path", "favorita.output_dir", "favorita.docs",
             "recommend.input", "recommend.output", "sipn.results")


def map_paths(c: Config, change) -> None:
    """Each set ``PATH_KEYS`` value that is a path (not a URI) replaced by ``change(value)``, in place."""
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        node = c
        for part in parents:
            node = getattr(node, part)
        value = getattr(node, leaf)
        if value and "://" not in value:
            setattr(node, leaf, change(value))


def portable(c: Config) -> Config:
    """A copy of ``c`` with the ``PATH_KEYS`` under the current folder written relative to
    it again: what identifies a run's settings apart from where it was started (a hash of
    the config)."""
    c, here = copy.deepcopy(c), Path.cwd()
    map_paths(c, lambda v: Path(v).relative_to(here).as_posix() or "." if Path(v).is_relative_to(here) else v)
    return c


def absolute_paths(c: Config) -> None:
    """``PATH_KEYS`` (where set) and a relative ``sqlite:///`` tracking URI made absolute, in place."""
    map_paths(c, lambda v: str(resolve_path(v)))
    uri = c.mlflow.tracking_uri
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        c.mlflow.tracking_uri = f"sqlite:///{resolve_path(uri[len('sqlite:///'):])}"


def validate(c: Config) -> None:
    check(c.name.strip() != "" and "/" not in c.name, "name", f"must be a plain non-empty name, got {c.name!r}")

    check(c.problem.name in PROBLEMS, "problem.name", f"must be one of {', '.join(PROBLEMS)}, got {c.problem.name!r}")
    try:
        problem = get_problem(c.problem.name, c.problem.params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"problem.params: {e}") from None
    check(c.problem.objective in ("cost", "reward"), "problem.objective", f"must be cost or reward, got {c.problem.objective!r}")
    check(0 < c.problem.discount <= 1, "problem.discount", f"must be in (0, 1], got {c.problem.discount}")
    d = c.data
    check_at_least("data", d, ("num_products",), low=3)
    check(len(d.distributions) > 0 and set(d.distributions) <= set(DISTRIBUTIONS), "data.distributions",
          f"must be a non-empty subset of {', '.join(DISTRIBUTIONS)}, got {list(d.distributions)}")
    check_range(d.mean_range, "data.mean_range", low=1e-6)
    check_range(d.negbin_shape_range, "data.negbin_shape_range", low=1e-6)
    check_range(d.zero_prob_range, "data.zero_prob_range")
    check_range(d.gamma_cv_range, "data.gamma_cv_range", low=1e-3)
    check(d.zero_prob_range[1] < 1, "data.zero_prob_range", f"must stay below 1, got {list(d.zero_prob_range)}")
    for name in ("holding_cost", "shortage_cost", "unit_cost", "price"):
        check_range(getattr(d, f"{name}_range"), f"data.{name}_range")
    check_range(d.lead_time_range, "data.lead_time_range")
    check(d.lead_time_range[0] >= problem.min_lead_time, "data.lead_time_range",
          f"must start at >= {problem.min_lead_time} for problem {problem.name}, got {list(d.lead_time_range)}")
    check(0 <= d.valid_fraction < 1 and 0 < d.test_fraction < 1 and d.valid_fraction + d.test_fraction < 1,
          "data.valid_fraction/test_fraction", "must be fractions that leave training products")
    check_at_least("data", d, ("shard_rows",))
    check(d.cache_mib >= 0, "data.cache_mib", f"must be >= 0 (0: stream every epoch), got {d.cache_mib}")
    p = c.policy
    check(p.kind in ("cnn", "mlp"), "policy.kind", f"must be cnn or mlp, got {p.kind!r}")
    check(p.structure in ("free", "by_construction"), "policy.structure",
          f"must be free or by_construction, got {p.structure!r}")
    check(p.terms >= 1, "policy.terms", f"must be >= 1, got {p.terms}")
    check(len(p.hidden) >= 1 and min(p.hidden) >= 1, "policy.hidden", f"must list layer widths >= 1, got {list(p.hidden)}")
    check(p.feature_lookahead >= 1 or not p.features, "policy.feature_lookahead",
          f"must be >= 1 when policy.features are set, got {p.feature_lookahead}")
    if p.kind == "cnn":
        check(1 + sum(p.dilations) == p.window, "policy.dilations",
              f"must add up to policy.window - 1 = {p.window - 1} (kernel 2), got {list(p.dilations)}")
    t = c.train
    check_at_least("train", t, ("epochs", "batch_size", "windows_per_batch", "horizon", "checkpoint_every",
                                "cpus_per_worker"))
    check(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    check(0 < t.lr_final_fraction <= 1, "train.lr_final_fraction", f"must be in (0, 1], got {t.lr_final_fraction}")
    check(0 <= t.warmup < t.horizon, "train.warmup", f"must be in [0, train.horizon), got {t.warmup}")
    check_at_least("train", t, ("num_workers", "grad_clip"), low=0)
    check(t.max_failures >= -1, "train.max_failures", f"must be >= 0 (or -1: no limit), got {t.max_failures}")
    check(t.keep in ("best_valid", "last"), "train.keep", f"must be best_valid or last, got {t.keep!r}")
    min_history = p.window if p.kind == "cnn" else 1
    check(t.history >= min_history, "train.history", f"must be >= the policy window {min_history}, got {t.history}")
    check(t.history + t.horizon <= d.periods, "train.horizon",
          f"plus train.history must fit in data.periods={d.periods}, got {t.history}+{t.horizon}")
    pen = c.penalty
    try:
        props = penalty_properties(problem, problem.state_width(d.lead_time_range[1]), pen.properties)
    except ValueError as err:
        raise ConfigError(f"penalty.properties: {err}") from None
    check(len(pen.weights) in (1, len(props)) and min(pen.weights) >= 0, "penalty.weights",
          f"must be one weight >= 0 or one per property ({len(props)}), got {list(pen.weights)}")
    check(0 <= pen.probe_share <= 1, "penalty.probe_share", f"must be in [0, 1], got {pen.probe_share}")
    check_at_least("penalty", pen, ("probe_widen",))
    check_at_least("penalty", pen, ("ramp_epochs",), low=0)
    sp = c.sipn
    check(len(sp.seeds) >= 1 and len(set(sp.seeds)) == len(sp.seeds), "sipn.seeds",
          f"must list distinct seeds, got {list(sp.seeds)}")
    check(len(sp.policies) >= 2 and sp.policies[0] == "plain"
          and set(sp.policies) <= {"plain", "penalized", "by_construction"}
          and len(set(sp.policies)) == len(sp.policies), "sipn.policies",
          f"must be plain followed by penalized and/or by_construction, got {list(sp.policies)}")
    check_at_least("sipn", sp, ("slice_multiple",))
    check(0 <= pen.shock_share <= 1, "penalty.shock_share", f"must be in [0, 1], got {pen.shock_share}")
    check(len(pen.shock_factors) == 2 and 0 < pen.shock_factors[0] <= pen.shock_factors[1], "penalty.shock_factors",
          f"must be [low, high] with 0 < low <= high, got {list(pen.shock_factors)}")
    check_at_least("penalty", pen, ("shock_max_lag",), low=1)
    e = c.eval
    check(min_history <= e.start < d.periods, "eval.start", f"must be in [{min_history}, data.periods), got {e.start}")
    check(0 <= e.warmup < d.periods - e.start, "eval.warmup", f"must leave evaluated periods, got {e.warmup}")
    check(set(e.baselines) <= set(BASELINES), "eval.baselines", f"must be a subset of {', '.join(BASELINES)}, got {list(e.baselines)}")
    check(c.benchmark.suite in (*PROBLEMS, "all"), "benchmark.suite",
          f"must be one of {', '.join(PROBLEMS)} or all, got {c.benchmark.suite!r}")
    check(c.benchmark.suite != "all" or set(c.benchmark.policies) <= {"dp", "learned"}, "benchmark.policies",
          f"must be a subset of dp, learned (or empty: every policy) with benchmark.suite=all, "
          f"got {list(c.benchmark.policies)}")
    check_at_least("benchmark", c.benchmark, ("eval_products", "max_eval_products", "eval_history", "eval_periods"),
                   low=1)
    check(c.benchmark.max_se_pct > 0 and c.benchmark.eval_warmup >= 0, "benchmark.max_se_pct",
          f"must be > 0 (and eval_warmup >= 0), got {c.benchmark.max_se_pct} ({c.benchmark.eval_warmup})")
    check_at_least("eval", e, ("omniscient_sim_periods",), low=100)
    r = c.robustness
    check(set(r.shocks) <= set(SHOCKS), "robustness.shocks", f"must be a subset of {', '.join(SHOCKS)}, got {list(r.shocks)}")
    check(0 <= r.shock_at < d.periods - e.start - e.warmup, "robustness.shock_at",
          f"must be a scored period in [0, {d.periods - e.start - e.warmup}), got {r.shock_at}")
    check_at_least("robustness", r, ("up_factor", "down_factor", "spike_factor"), low=0)
    check(all(k >= 0 for k in r.initial_multiples), "robustness.initial_multiples",
          f"must be >= 0, got {list(r.initial_multiples)}")
    s = c.sweep
    check_at_least("sweep", s, ("num_samples", "max_concurrent_trials"))
    check_range(s.weight_range, "sweep.weight_range", low=1e-12)
    check_range(s.lr_range, "sweep.lr_range", low=1e-12)
    check_at_least("sweep", s, ("grace_period",))
    check_at_least("sweep", s, ("reduction_factor",), low=2)
    # the sections of the real-demand jobs: prepare, retail, favorita
    pr = c.prepare
    check(pr.source in PREPARE_SOURCES, "prepare.source", f"must be one of {', '.join(PREPARE_SOURCES)}, got {pr.source!r}")
    check(pr.frequency in FREQUENCIES, "prepare.frequency", f"must be weekly or daily, got {pr.frequency!r}")
    check_at_least("prepare", pr, ("buckets",))
    validate_retail(c.retail)
    f = c.favorita
    check(f.source in FAVORITA_SOURCES, "favorita.source", f"must be one of {', '.join(FAVORITA_SOURCES)}, got {f.source!r}")
    check(len(f.lead_times) >= 1 and min(f.lead_times) >= 0, "favorita.lead_times", f"must list lead times >= 0, got {list(f.lead_times)}")
    check_at_least("favorita", f, ("test_periods", "valid_periods", "folds"))
    check(f.fold is None or 0 <= f.fold < f.folds, "favorita.fold", f"must be in 0..{f.folds - 1} (or null), got {f.fold}")
    check(len(set(f.seeds)) == len(f.seeds), "favorita.seeds", f"must not repeat, got {list(f.seeds)}")
    ends = [e for e in (f.train_end, f.valid_end, f.test_end) if e is not None]
    check(ends == sorted(set(ends)) and all(e > 0 for e in ends), "favorita.train_end/valid_end/test_end",
          f"must increase and be > 0 where set, got {f.train_end}/{f.valid_end}/{f.test_end}")
    check(f.headline in ("directbackprop", "directbackprop_sipn"), "favorita.headline",
          f"must be directbackprop or directbackprop_sipn, got {f.headline!r}")
    check(all(0 < q < 1 for q in f.curve_levels), "favorita.curve_levels",
          f"must be levels in (0, 1), got {list(f.curve_levels)}")
    check_at_least("favorita", f, ("price", "unit_cost", "holding_cost"), low=0)
    check(f.price > f.unit_cost, "favorita.price", f"must exceed favorita.unit_cost={f.unit_cost}, got {f.price}")
    check(len(f.policies) >= 1 and set(f.policies) <= set(FAVORITA_POLICIES), "favorita.policies",
          f"must be a non-empty subset of {', '.join(FAVORITA_POLICIES)}, got {list(f.policies)}")
    check(all(0 < q < 1 for q in f.quantiles), "favorita.quantiles", f"must be levels in (0, 1), got {list(f.quantiles)}")
    check_at_least("favorita", f, ("forecast_epochs", "moving_average_window", "plot_series"))
    check(f.forecast_lr > 0, "favorita.forecast_lr", f"must be > 0, got {f.forecast_lr}")
    rec = c.recommend
    check(rec.state in RECOMMEND_STATES, "recommend.state", f"must be one of {', '.join(RECOMMEND_STATES)}, got {rec.state!r}")
    check_at_least("recommend", rec, ("batch_size", "concurrency"))
    check(0 <= c.promote.margin < 1, "promote.margin", f"must be in [0, 1), got {c.promote.margin}")
    check(c.promote.violation_tolerance >= 0, "promote.violation_tolerance",
          f"must be at least 0, got {c.promote.violation_tolerance}")
    check_at_least("compare", c.compare, ("runs",))
    check(c.compare.kind in (None, *RUN_KINDS), "compare.kind",
          f"must be one of {', '.join(RUN_KINDS)} or null, got {c.compare.kind!r}")
    check(c.model.uri is None or c.model.uri.strip() != "", "model.uri", "must be null or a checkpoint path or URI")


def from_yaml(text: str, conf_dir: Path = CONF_DIR) -> Config:
    """A saved config (a checkpoint's, a run's), on top of today's defaults, so that
    configs saved before a key was added still load."""
    base = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(conf_dir / "config.yaml"))
    return OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.create(text)))


def to_yaml(c: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(c))


def flatten(c: Config) -> dict[str, str]:
    """``{"train.lr": "0.003", ...}`` for tracking."""
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                out[key] = str(v)

    walk(OmegaConf.to_container(OmegaConf.structured(c)), "")
    return out


def required_periods(c: Config) -> dict[str, int]:
    """The history a product needs, per split: a training rollout (``train.history +
    train.horizon``) for ``train``, the evaluation window (``eval.start + eval.warmup + 1``)
    for ``valid`` and ``test``."""
    evaluation = c.eval.start + c.eval.warmup + 1
    return {"train": c.train.history + c.train.horizon, "valid": evaluation, "test": evaluation}


def resolve_path(path: str) -> Path:
    """``path`` made absolute: a relative one is taken from the current folder (never the
    package's), as a command-line tool does. ``load_config`` applies it to the config's paths
    once, in the driver, since Ray Train and Tune workers run in folders of their own."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p
