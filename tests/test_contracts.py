"""The typed seams of the core: every registered problem is a ``Problem`` and every policy
class of the core is a ``Policy`` (``pipeline.core.protocols``), members and signatures;
and what is derived from the problem registry (benchmark suites, the performance grid, the
penalty benchmark's cases) follows it. Nothing here names a problem: a problem registered
in ``PROBLEMS`` is checked by every test of this file."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
import yaml

import pipeline.core
from pipeline.config import PROJECT_ROOT, load_config
from pipeline.core import dp
from pipeline.core.baselines import BaseStockPolicy
from pipeline.core.batch import batch_from_columns
from pipeline.core.policy import build_policy
from pipeline.core.problems import PROBLEMS, Step, get_problem
from pipeline.core.problems.base import StateSpace
from pipeline.core.properties import Property
from pipeline.core.protocols import Policy, Problem
from pipeline.core.rollout import rollout
from pipeline.data.synthetic import synthetic_population
from pipeline.studies.suites import SUITES, suite_module_name

NAMES = list(PROBLEMS)
SUITES_DIR = Path(importlib.util.find_spec("pipeline.studies.suites").origin).parent


def protocol_methods(proto: type) -> dict[str, object]:
    return {k: v for k, v in vars(proto).items() if inspect.isfunction(v) and not k.startswith("_")}


def signature_mismatch(impl, proto_method) -> str | None:
    """Why ``impl`` cannot be called as the protocol calls it (positionally, with the
    protocol's arguments), or None when it can."""
    n = len(inspect.signature(proto_method).parameters) - 1  # after self
    try:
        inspect.signature(impl).bind(None, *range(n))  # the unbound function: self first
    except (TypeError, ValueError) as e:
        return f"{getattr(impl, '__qualname__', impl)}{inspect.signature(impl)}: {e}"
    return None


def core_policy_classes() -> list[type]:
    """Every class defined in ``pipeline.core`` with a ``prepare`` or an ``act``, except the
    protocol itself."""
    found = {}
    for info in pkgutil.walk_packages(pipeline.core.__path__, "pipeline.core."):
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if (inspect.isclass(cls) and cls.__module__ == module.__name__ and cls is not Policy
                    and any(hasattr(cls, m) for m in protocol_methods(Policy))):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


def population(name: str, n: int = 6, periods: int = 80):
    """The problem and a few products as ``conf/problem/<name>.yaml`` describes them."""
    cfg = load_config([f"problem={name}", "experiment=smoke"])
    cfg.data.num_products, cfg.data.periods = n, periods
    problem = get_problem(cfg.problem.name, cfg.problem.params)
    return cfg, problem, batch_from_columns(synthetic_population(cfg.data, 0))


# ------------------------------------------------------------------------------ problems

@pytest.mark.parametrize("name", NAMES)
def test_every_registered_problem_is_a_problem(name):
    cls = PROBLEMS[name]
    problem = cls()  # every parameter has a default
    assert isinstance(problem, Problem)
    assert problem.name == name
    assert isinstance(problem.actions, tuple) and problem.actions and all(isinstance(a, str) for a in problem.actions)
    assert isinstance(problem.discrete, bool) and isinstance(problem.min_lead_time, int)
    bad = [why for m, proto in protocol_methods(Problem).items()
           if (why := signature_mismatch(getattr(cls, m), proto))]
    assert bad == []


def test_a_class_missing_a_member_is_no_problem():
    """The protocol is structural: inheriting ``ProblemBase`` does not make a class a
    ``Problem`` without the members."""
    from pipeline.core.problems.base import ProblemBase

    class Partial(ProblemBase):
        name, actions, discrete, min_lead_time = "partial", ("order",), True, 0

        def state_width(self, max_lead_time):
            return 1

    assert not isinstance(Partial(), Problem)
    assert all(isinstance(cls(), Problem) for cls in PROBLEMS.values())


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_problem_has_its_yaml_and_keeps_its_contract_on_its_products(name):
    """``conf/problem/<name>.yaml`` names it; on its products the members return what the
    protocol says: state names for the width, a state [B, W], a ``Step`` of [B] tensors,
    a DP grid of the action width, properties of known actions and state entries."""
    conf = yaml.safe_load((PROJECT_ROOT / "conf" / "problem" / f"{name}.yaml").read_text())
    assert conf["problem"]["name"] == name
    cfg, problem, batch = population(name)
    width = problem.state_width(int(batch.lead_time.max()))
    names, actions = problem.state_names(width), list(problem.actions)
    assert len(names) == width == len(set(names))
    state = problem.initial_state(batch, width)
    assert state.shape == (batch.size, width)
    setup = problem.setup(batch, width)
    step = problem.step(state, torch.ones(batch.size, len(actions)), batch.demand[:, 0], batch, setup)
    assert isinstance(step, Step) and step.next_state.shape == (batch.size, width)
    for field in ("cost", "sales", "held", "lost", "waste"):
        assert getattr(step, field).shape == (batch.size,), field
    assert problem.inventory_position(state).shape == (batch.size,)
    space = problem.dp_space(batch.select([0]), float(batch.true_mean[0]), 1.0)
    assert isinstance(space, StateSpace) and space.actions.shape[1] == len(actions)
    for props in (problem.claimed_properties(width), problem.default_properties(width)):
        assert props and all(isinstance(p, Property) for p in props)
        assert all(p.action in actions and p.coord in names and p.other in (None, *names) for p in props)


# ------------------------------------------------------------------------------ policies

@pytest.mark.parametrize("cls", core_policy_classes(), ids=lambda c: c.__qualname__)
def test_every_policy_class_of_the_core_is_a_policy(cls):
    """The network, the baselines, the DP's table policy, the forecast policies and every
    heuristic: both members, callable as ``rollout`` calls them."""
    assert issubclass(cls, Policy)
    bad = [why for m, proto in protocol_methods(Policy).items()
           if (why := signature_mismatch(getattr(cls, m), proto))]
    assert bad == []


def test_the_core_sweep_finds_the_network_the_baselines_and_the_table_policy():
    found = {c.__qualname__ for c in core_policy_classes()}
    assert {"OrderPolicy", "BaseStockPolicy", "TablePolicy"} <= found


@pytest.mark.parametrize("name", NAMES)
def test_every_policy_class_of_a_problems_heuristics_is_in_its_suite(name):
    """Each suite lists the heuristic policy classes of its problem's heuristics module, so
    that the suites know every heuristic."""
    module_name = f"pipeline.core.heuristics.{name}_heuristics"
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{name} has no heuristics module")
    assert name in SUITES, f"{name} has heuristics but no benchmark suite"
    defined = {c for c in core_policy_classes() if c.__module__ == module_name}
    assert defined <= set(SUITES[name].policy_classes)
    assert all(issubclass(c, Policy) for c in SUITES[name].policy_classes)


@pytest.mark.parametrize("name", NAMES)
def test_the_network_and_base_stock_roll_through_every_problem(name):
    cfg, problem, batch = population(name)
    width = problem.state_width(int(batch.lead_time.max()))
    policies = {"base_stock": BaseStockPolicy(problem, torch.full((batch.size,), 5.0))}
    for kind in ("mlp", "cnn"):
        cfg.policy.kind = kind
        policies[kind] = build_policy(cfg.policy, width, problem)
    for key, policy in policies.items():
        assert isinstance(policy, Policy), key
        with torch.no_grad():
            traj = rollout(problem, policy, batch, cfg.train.history, 3, width)
        assert traj.actions.shape == (batch.size, 3, len(problem.actions)), key


@pytest.mark.parametrize("name", [n for n in NAMES if n in SUITES])
def test_the_dp_table_policy_plays_back_the_dp_choice(name):
    """``TablePolicy`` of an exact solution, asked through the protocol in every grid
    state (as ``dp.policy_choice`` does), chooses what the DP chose."""
    suite = SUITES[name]
    case = suite.dp_instance((suite.timed or suite.instances)[0])
    with dp.one_thread():
        solution = dp.solve(dp.transitions(case.problem, case.product, case.space, case.pmf), case.discount,
                            aperiodic=dp.lazy(case.discount))
    policy = dp.TablePolicy.of(solution)
    assert isinstance(policy, Policy)
    chosen = dp.policy_choice(case.space, policy, case.product)
    assert torch.equal(case.space.actions[chosen], case.space.actions[solution.choice])


# ------------------------------------------------------------------------------ the registry

def test_the_suites_follow_the_registry():
    """A suite per registered problem that has a ``<name>_suite`` module, in registry order;
    no suite module without its problem; each suite's timed instances are its own."""
    with_module = [n for n in NAMES if importlib.util.find_spec(suite_module_name(n)) is not None]
    assert list(SUITES) == with_module
    modules = sorted(p.stem.removesuffix("_suite") for p in SUITES_DIR.glob("*_suite.py"))
    assert modules == sorted(with_module)
    for name, suite in SUITES.items():
        assert suite.problem == name and suite.policies[0] == "dp"
        assert suite.timed and all(inst in suite.instances for inst in suite.timed)
        assert (PROJECT_ROOT / "conf" / "suite" / f"{name}.yaml").exists()


def test_the_benchmark_grids_follow_the_registry():
    from benchmarks import penalty_step, perf

    assert list(perf.PROBLEMS) == NAMES and list(penalty_step.CASES) == NAMES
    for mode, s in perf.SIZES.items():
        grid = perf.rollout_grid(s, [1, 2])
        assert {p for p, *_ in grid} == set(NAMES), mode
        assert [n for n, _ in perf.dp_cases(s)] == [n for n in SUITES for _ in SUITES[n].timed[:s["dp_timed"]]]


def test_the_benchmark_grids_of_the_four_problems_are_what_they_were():
    """The registry-derived grids give the cases the hand-written lists gave."""
    from benchmarks import penalty_step, perf

    if set(NAMES) != {"lost_sales", "perishable", "dual_sourcing", "removal"}:
        pytest.skip("the registry has changed")
    assert perf.PROBLEMS == {"lost_sales": ["data.lead_time_range=[4,4]"], "perishable": [],
                             "dual_sourcing": [], "removal": []}
    assert penalty_step.CASES == {"lost_sales": ["data.lead_time_range=[5,5]"], "perishable": [],
                                  "dual_sourcing": [], "removal": []}
    assert perf.dp_cases(perf.SIZES["full"]) == [
        ("lost_sales", {"p": 4, "L": 2}), ("lost_sales", {"p": 19, "L": 3}),
        ("perishable", {"m": 2, "L": 1, "w": 7, "issuing": "fifo"}),
        ("perishable", {"m": 3, "L": 1, "w": 7, "issuing": "fifo"}),
        ("perishable", {"m": 3, "L": 2, "w": 7, "issuing": "fifo"}),
        ("dual_sourcing", {"l_r": 2, "c_e": 20}), ("dual_sourcing", {"l_r": 3, "c_e": 20}),
        ("dual_sourcing", {"l_r": 4, "c_e": 20}),
        ("removal", {"p": 4, "s": 0, "L": 0, "gamma": 0.95}),
        ("removal", {"p": 19, "s": 1, "L": 1, "gamma": 0.95})]
    assert perf.dp_cases(perf.SIZES["quick"]) == [
        ("lost_sales", {"p": 4, "L": 2}), ("perishable", {"m": 2, "L": 1, "w": 7, "issuing": "fifo"}),
        ("dual_sourcing", {"l_r": 2, "c_e": 20}), ("removal", {"p": 4, "s": 0, "L": 0, "gamma": 0.95})]
    quick = perf.rollout_grid(perf.SIZES["quick"], [1, 2])
    assert quick == [(p, k, 32, 10, 1) for p in NAMES for k in ("mlp", "cnn")] + [("lost_sales", "mlp", 32, 10, 2)]
    full = perf.rollout_grid(perf.SIZES["full"], [1, 2])
    assert len(full) == 9 + 5 * 7 + 9 and full[:9] == [("lost_sales", "mlp", b, h, 1) for b in (256, 1024, 8192)
                                                       for h in (20, 50, 100)]
    assert perf.problem_label("lost_sales", perf.PROBLEMS["lost_sales"]) == "lost_sales(L=4)"
    assert perf.problem_label("lost_sales", penalty_step.CASES["lost_sales"]) == "lost_sales(L=5)"
    assert perf.problem_label("removal", []) == "removal"
