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


def test_step_speed_writes_its_table_and_profile_and_rejects_bad_arguments(tmp_path, monkeypatch, capsys):
    import pytest
    import torch

    from benchmarks import step_speed
    from pipeline.config import ConfigError

    doc = tmp_path / "performance.md"
    monkeypatch.setattr(step_speed, "DOC", doc)
    step_speed.main(["threads=1", "repeats=1", "batch=64,128", "horizon=12", "rows=3", "profile=true", "docs=true"])
    text = doc.read_text()
    assert text.lstrip().startswith("<!-- perf:step_cpu -->") and "<!-- /perf:step_cpu -->" in text
    rows = [line for line in text.splitlines() if line.startswith("| 64 |") or line.startswith("| 128 |")]
    assert len(rows) == 6  # 2 batch sizes x 3 calls
    assert all(float(r.split("|")[5].replace(",", "")) > 0 for r in rows)
    assert "forward+backward" in text and "aten::" in text  # the profile's op table
    capsys.readouterr()
    step_speed.main(["threads=1", "repeats=1", "batch=32", "horizon=12", "compile=true"])
    timed = [line.split()[2:-5] for line in capsys.readouterr().out.splitlines() if "product-periods/s" in line]
    assert [" ".join(t) for t in timed] == ["forward+backward", "forward", "no_grad", "forward+backward, compiled",
                                           "forward, compiled", "no_grad, compiled"]
    with pytest.raises(ConfigError, match="batch takes comma-separated integers"):
        step_speed.main(["batch=big"])
    with pytest.raises(ConfigError, match="expected one of"):
        step_speed.main(["batches=64"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            step_speed.main(["device=cuda"])
