"""The structural properties each problem claims, checked on exact DP policies over the whole grid
and over the states the optimal policy visits (docs/structure.md). Each suite module provides
``dp_instance(instance) -> DPInstance``."""
from __future__ import annotations

import pandas as pd
from torch import Tensor

from pipeline.core import dp
from pipeline.core.properties import check_table
from pipeline.reporting.report_blocks import markdown_table
from pipeline.studies.suites.instances import DPInstance, instance_key

MIN_PROBABILITY = 1e-6
MAX_ENTRIES = 30_000_000  # states x actions x demand values: the transition table's size
COLUMNS = ["suite", "problem", "instance", "property", "states", "holds_pct", "worst",
           "visited_states", "visited_holds_pct"]


def occupancy(trans: dp.Transitions, solution: dp.Solution, initial: Tensor | None) -> Tensor:
    """Where the policy goes: the stationary law, or the discounted occupancy from a start."""
    if initial is None or solution.discount == 1.0:
        return dp.stationary(trans, solution.choice)
    return dp.discounted_occupancy(trans, solution.choice, initial, solution.discount)


def check_instance(case: DPInstance) -> tuple[list, list]:
    """(checks over the whole grid, checks over the visited states)."""
    problem = case.problem
    with dp.one_thread():
        trans = dp.transitions(problem, case.product, case.space, case.pmf)
        solution = dp.solve(trans, case.discount, aperiodic=dp.lazy(case.discount))
        visited = occupancy(trans, solution, case.initial) > MIN_PROBABILITY
    width = len(case.space.lows)
    names, props = problem.state_names(width), problem.claimed_properties(width)
    return tuple(check_table(solution.table, names, list(problem.actions), props, mask=mask)
                 for mask in (None, visited))


def structure_table(suite, instances=None, progress=lambda line: None) -> pd.DataFrame:
    """One row per (instance, property) of a ``benchmarks.Suite``; instances whose
    transition table would exceed ``MAX_ENTRIES`` are skipped (and said so)."""
    rows = []
    for inst in instances or suite.instances:
        case = suite.dp_instance(inst)
        if case.entries > MAX_ENTRIES:
            progress(f"[structure {suite.name}] {instance_key(inst)}: skipped, "
                     f"{case.entries:,} transitions")
            continue
        every, visited = check_instance(case)
        for a, b in zip(every, visited):
            rows.append([suite.name, suite.problem, instance_key(inst), str(a.prop), a.states,
                         100 * a.holds, a.worst, b.states, 100 * b.holds])
        progress(f"[structure {suite.name}] {instance_key(inst)}: "
                 + ", ".join(f"{100 * b.holds:.0f}%" for b in visited))
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame, command: str, instances=()) -> str:
    """Per property: on how many instances it holds everywhere, and the worst instance;
    ``instances`` (the suite's) names those not checked here."""
    name = table.suite.iloc[0]
    skipped = [instance_key(i) for i in instances if instance_key(i) not in set(table.instance)]
    lines = [f"## {name}", "", f"Command: `{command}`", "",
             *([f"Not checked here (transition table too large): {', '.join(skipped)}.", ""] if skipped else []),
             ]
    rows = []
    for prop, group in table.groupby("property", sort=False):
        full = int((group.visited_holds_pct >= 100).sum())
        worst = group.loc[group.visited_holds_pct.idxmin()]
        rows.append([f"`{prop}`", f"{full} of {len(group)} instances",
                     f"{worst.instance}: {worst.visited_holds_pct:.1f}% / {worst.holds_pct:.1f}%"])
    summary = pd.DataFrame(rows, columns=["property", "holds on every visited state in",
                                          "worst instance (visited / whole grid)"])
    return "\n".join(lines) + "\n" + markdown_table(summary) + "\n"
