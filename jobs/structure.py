"""Check each problem's claimed structural properties (``docs/problems/``) on exact DP policies.

    python -m jobs.structure suite=perishable      (suite=all: every suite)

For every instance of the suite small enough for a transition table, the optimal policy's
table is checked property by property over the states it visits and over the whole grid.
Writes ``<benchmark.results_dir>/structure_<suite>.csv`` (one row per instance and property)
and regenerates the tables of ``docs/structure.md`` beside ``benchmark.docs`` (its block
``structure:suites``; the prose around it is the file's own).
"""
from __future__ import annotations

import time

from jobs import _cli
from pipeline.config import PROJECT_ROOT, load_config, resolve_path
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import write_block

TEMPLATE = PROJECT_ROOT / "docs" / "structure.md"  # its prose heads a report written elsewhere


def main(args: list[str]) -> int:
    cfg = load_config(args)
    from pipeline.studies.suites import SUITES, report_sections, selected
    from pipeline.studies.suites.dp_structure import markdown, structure_table

    b = cfg.benchmark
    results = resolve_path(b.results_dir)
    plain = logs.get("")
    results.mkdir(parents=True, exist_ok=True)
    for name in selected(b.suite):
        started = time.time()
        suite = SUITES[name]
        if suite.dp_instance is None:
            logs.get("structure").info(f"suite {name} has no DP instances to check")
            continue
        table = structure_table(suite, progress=plain.info)
        table.to_csv(results / f"structure_{name}.csv", index=False)
        plain.info(markdown(table, f"python -m jobs.structure suite={name}", suite.instances))
        plain.info(f"({time.time() - started:.0f}s)\n")
    def render(table, command):
        return markdown(table, command, SUITES[table.suite.iloc[0]].instances)

    docs = resolve_path(b.docs).with_name("structure.md")
    write_block(docs, "structure:suites", report_sections(results, "structure_", render, "structure").rstrip("\n"),
                header=TEMPLATE.read_text() if TEMPLATE.exists() else "")
    plain.info(f"Report: {docs}")
    return 0


if __name__ == "__main__":
    _cli.run("structure", main)
