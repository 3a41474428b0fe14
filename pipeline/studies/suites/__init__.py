"""Benchmark suites: every policy of a suite on each instance, against the exact optimum. The rows'
columns and what a suite module provides: docs/benchmarks.md, Suites and their CSVs.
"""
from __future__ import annotations

import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline.core import dp
from pipeline.core.problems import PROBLEMS
from pipeline.reporting.progress import eta
from pipeline.reporting.report_blocks import markdown_table
from pipeline.studies.suites.instances import instance_key

COLUMNS = ["suite", "problem", "instance", "policy", "avg_cost", "gap_pct"]


@dataclass(frozen=True)
class Suite:
    name: str
    problem: str
    policies: tuple[str, ...]
    instances: tuple[dict, ...]
    evaluate: Callable[..., dict[str, float]]  # evaluate(instance, policies) -> {policy: avg_cost}
    notes: str = ""  # what the suite reproduces, for the report
    dp_instance: Callable | None = None  # instance -> DPInstance (the exact DP's inputs)
    policy_classes: tuple[type, ...] = ()  # the heuristic policy classes of its policies
    timed: tuple[dict, ...] = ()  # instances whose exact DP the performance suite times
    picture: dict | None = None   # the instance whose learned and DP policies the report draws


def suite_module_name(problem: str) -> str:
    return f"{__name__}.{problem}_suite"


def load_suite(problem: str) -> Suite | None:
    """The suite of the registered problem ``problem`` from its module ``<problem>_suite``,
    or None when it has none."""
    module_name = suite_module_name(problem)
    if importlib.util.find_spec(module_name) is None:
        return None
    m = importlib.import_module(module_name)
    return Suite(problem, problem, m.POLICIES, m.GRID, m.evaluate, m.NOTES, m.dp_instance,
                 m.POLICY_CLASSES, m.TIMED, getattr(m, "PICTURE", None))


SUITES = {suite.name: suite for suite in map(load_suite, PROBLEMS) if suite is not None}


def selected(name: str) -> list[str]:
    """The suites a job runs: one by name, or every one for ``all``."""
    return list(SUITES) if name == "all" else [name]


def report_sections(results: Path, prefix: str, render: Callable[[pd.DataFrame, str], str], job: str) -> str:
    """A report from every suite's ``<results>/<prefix><suite>.csv``, in registry order, each
    section rendered with the command that regenerates it."""
    paths = [results / f"{prefix}{name}.csv" for name in SUITES]
    return "\n".join(render(pd.read_csv(p), f"python -m jobs.{job} suite={p.stem[len(prefix):]}")
                     for p in paths if p.exists())


def run_suite(name: str, policies=(), instances=None,
              progress: Callable[[str], None] = lambda line: None) -> pd.DataFrame:
    """Every policy (all of the suite's when ``policies`` is empty) on every instance."""
    if name not in SUITES:
        raise ValueError(f"unknown benchmark suite {name!r}; known: {', '.join(SUITES)}")
    suite = SUITES[name]
    policies = tuple(policies) or suite.policies
    unknown = sorted(set(policies) - set(suite.policies))
    if unknown:
        raise ValueError(f"suite {name} has no policies {unknown}; known: {', '.join(suite.policies)}")
    instances = list(instances or suite.instances)
    rows, started = [], time.time()
    for i, inst in enumerate(instances):
        with dp.one_thread():  # many small tensor ops: one thread beats two competing ones
            costs = suite.evaluate(inst, policies)
        ref = costs.get("dp")
        for policy, value in costs.items():
            gap = 100 * (value - ref) / ref if ref else float("nan")
            rows.append([name, suite.problem, instance_key(inst), policy, value, gap])
        progress(f"[benchmark {name}] {i + 1}/{len(instances)} {instance_key(inst)}: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in costs.items())
                 + f"  ({eta(i + 1, len(instances), started, 'instances')})")
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame, command: str) -> str:
    """The suite's section: its name, notes and ``suite_table``."""
    name = table.suite.iloc[0]
    notes = SUITES[name].notes if name in SUITES else ""
    return "\n".join([f"## {name}", "", *([notes, ""] if notes else []), suite_table(table, command)])


def suite_table(table: pd.DataFrame, command: str) -> str:
    """The command, then instances as rows, policies as columns (cost and gap to dp)."""
    policies = list(dict.fromkeys(table.policy))

    def cost(cells: pd.DataFrame, p: str) -> str:
        if p not in cells.index:
            return ""
        gap = "" if p == "dp" or pd.isna(cells.gap_pct[p]) else f" ({cells.gap_pct[p]:+.2f}%)"
        return f"{cells.avg_cost[p]:.4f}" + gap

    wide = pd.DataFrame([[inst, *(cost(group.set_index("policy"), p) for p in policies)]
                         for inst, group in table.groupby("instance", sort=False)],
                        columns=["instance", *policies])
    return f"Command: `{command}`\n\n" + markdown_table(wide) + "\n"
