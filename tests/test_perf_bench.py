"""The performance suite (`make perf`) in quick mode: every group writes rows, in the
documented units, and the report has a section for each."""
import math

import pandas as pd

from benchmarks.perf import COLUMNS, GROUPS, MEMORY, RAY_GROUPS, UNITS, main


def test_quick_perf_writes_every_group(tmp_path):
    out, docs = tmp_path / "perf.csv", tmp_path / "performance.md"
    assert main(["quick=true", f"out={out}", f"docs={docs}", f"work={tmp_path / 'work'}"]) == 0

    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    for group, (letter, title, benchmarks) in GROUPS.items():
        for name in benchmarks:
            assert (table.benchmark == name).any(), f"({letter}) {group}: no {name} rows"
        memory = table[table.config.str.startswith(f"group={group}")]
        expected = set(MEMORY) if group in RAY_GROUPS else {"peak_rss"}
        assert set(memory.benchmark) == expected, group
        assert f"## ({letter}) {title}" in docs.read_text()
    assert set(table.benchmark) <= set(UNITS)
    assert (table.unit == table.benchmark.map(UNITS)).all()
    assert all(math.isfinite(v) for v in table.value)
    # every value is a positive rate, time or size; an overhead in % can come out below 0
    assert (table[table.benchmark != "penalty_overhead"].value > 0).all()
    # the headline row: lost sales (L = 4), MLP, at 1 and 2 threads
    head = table[(table.benchmark == "step_forward_backward") & table.config.str.contains("lost_sales", regex=False)
                 & table.config.str.contains("policy=mlp", regex=False)]
    assert {"threads=1", "threads=2"} <= {c.split()[-1] for c in head.config}
