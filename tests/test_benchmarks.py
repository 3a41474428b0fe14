"""Benchmark suites: exact policy costs in the documented CSV layout."""
import subprocess
import sys

import pytest

from pipeline.studies.suites import COLUMNS, markdown, run_suite
from pipeline.config import PROJECT_ROOT


def test_lost_sales_rows_against_zipkin_and_closed_form():
    table = run_suite("lost_sales", ["dp", "base_stock"], instances=[{"p": 4, "L": 0}, {"p": 4, "L": 2}])
    assert list(table.columns) == COLUMNS
    assert list(table.instance) == ["p=4;L=0", "p=4;L=0", "p=4;L=2", "p=4;L=2"]
    cost = table.set_index(["instance", "policy"]).avg_cost
    assert cost["p=4;L=0", "dp"] == pytest.approx(3.2774, abs=1e-4)  # newsvendor, docs/problems/lost_sales.md
    assert cost["p=4;L=2", "dp"] == pytest.approx(4.40, abs=0.01)     # Zipkin (2008)
    assert cost["p=4;L=2", "base_stock"] > cost["p=4;L=2", "dp"]
    gaps = table.set_index(["instance", "policy"]).gap_pct
    assert gaps["p=4;L=2", "dp"] == 0 and gaps["p=4;L=0", "base_stock"] == 0
    doc = markdown(table, "python -m jobs.benchmark suite=lost_sales")
    assert "| p=4;L=2 | 4.3953 |" in doc


def test_unknown_suite_or_policy_is_a_one_line_error():
    with pytest.raises(ValueError, match="no policies"):
        run_suite("lost_sales", ["dp", "magic"], instances=[{"p": 4, "L": 1}])
    out = subprocess.run([sys.executable, "-m", "jobs.benchmark", "suite=nope"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("config error: unknown suite 'nope'")
    assert "Traceback" not in out.stderr


def test_structure_table_checks_every_claimed_property_on_the_dp_policy():
    from pipeline.studies.suites import SUITES
    from pipeline.studies.suites.dp_structure import markdown as structure_markdown, structure_table

    table = structure_table(SUITES["dual_sourcing"], instances=[{"l_r": 2, "c_e": 20}])
    problem = SUITES["dual_sourcing"].dp_instance({"l_r": 2, "c_e": 20}).problem
    assert len(table) == len(problem.claimed_properties(2))
    assert (table.visited_holds_pct == 100).all() and (table.holds_pct == 100).all()
    assert (table.visited_states > 0).all() and (table.states >= table.visited_states).all()
    assert "1 of 1 instances" in structure_markdown(table, "python -m jobs.structure suite=dual_sourcing")


def test_an_unknown_benchmark_policy_is_a_config_error_naming_the_suites_policies():
    from jobs import benchmark
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="benchmark.policies must be a subset of dp, base_stock"):
        benchmark.main(["suite=lost_sales", "benchmark.policies=[magic]"])
