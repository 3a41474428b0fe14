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
    monkeypatch.setattr(step_speed, "RESULTS", tmp_path)
    step_speed.main(["threads=1", "repeats=1", "batch=64,128", "horizon=12", "rows=3", "profile=true", "docs=true",
                     "kind=cnn,mlp"])
    text = doc.read_text()
    assert text.lstrip().startswith("<!-- perf:step_cpu -->") and "<!-- /perf:step_cpu -->" in text
    rows = [line for line in text.splitlines() if line.startswith(("| cnn | 64 |", "| mlp | 128 |"))]
    assert len(rows) == 6  # 2 (policy, batch) pairs x 3 calls
    assert all(float(r.split("|")[6].replace(",", "")) > 0 for r in rows)
    assert "forward+backward" in text and "aten::" in text and "of the cnn policy at batch 128" in text
    csv = pd.read_csv(tmp_path / "step_speed_cpu.csv")
    assert len(csv) == 12 and set(csv.kind) == {"cnn", "mlp"} and (csv.product_periods_per_s > 0).all()
    capsys.readouterr()
    step_speed.main(["threads=1", "repeats=1", "batch=32", "horizon=12", "compile=true"])
    timed = [line.split()[3:-5] for line in capsys.readouterr().out.splitlines() if "product-periods/s" in line]
    assert [" ".join(t) for t in timed] == ["forward+backward", "forward", "no_grad", "forward+backward, compiled",
                                           "forward, compiled", "no_grad, compiled"]
    with pytest.raises(ConfigError, match="kind takes cnn and/or mlp"):
        step_speed.main(["kind=rnn"])
    with pytest.raises(ConfigError, match="batch takes comma-separated integers"):
        step_speed.main(["batch=big"])
    with pytest.raises(ConfigError, match="expected one of"):
        step_speed.main(["batches=64"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            step_speed.main(["device=cuda"])


def test_time_to_quality_scores_against_the_dp_policy_and_writes_its_report(tmp_path, monkeypatch):
    from benchmarks import time_to_quality as ttq

    for name, path in (("RESULTS", tmp_path / "ttq.csv"), ("FIGURE", tmp_path / "ttq.png"),
                       ("DOC", tmp_path / "performance.md")):
        monkeypatch.setattr(ttq, name, path)
    assert ttq.main(["kinds=mlp", "seeds=0", "budget_s=4", "eval_every_s=1", "test_products=200",
                     "test_periods=100", "batch=64"]) == 0
    curve = pd.read_csv(tmp_path / "ttq.csv")
    assert len(curve) >= 2 and (curve.seconds.diff().dropna() > 0).all() and (curve.steps > 0).all()
    # the DP policy's cost on the same paths is the exact optimum up to the paths' noise
    dp_cost = curve.avg_cost / (1 + curve.gap_to_dp_policy_pct / 100)
    assert abs(dp_cost.iloc[0] / ttq.OPTIMUM - 1) < 0.03
    assert (curve.gap_se_pct > 0).all() and (curve.gap_to_dp_policy_pct > 0).all()  # 4 s: far from optimal
    text = (tmp_path / "performance.md").read_text()
    assert "<!-- perf:time_to_quality -->" in text and "| mlp | 0 |" in text and "not reached" in text
    assert (tmp_path / "ttq.png").stat().st_size > 0


def test_time_to_quality_counts_the_first_evaluation_within_the_target():
    from benchmarks.time_to_quality import reached

    curve = pd.DataFrame({"seconds": [5.0, 10.0, 15.0, 20.0], "gap_to_dp_policy_pct": [2.0, 0.9, 1.1, 0.2]})
    assert reached(curve, 1.0) == 10.0 and reached(curve, 0.3) == 20.0 and reached(curve, 0.1) is None


def test_scale_report_divides_each_epochs_rate_by_the_steps(tmp_path, monkeypatch):
    from benchmarks import scale

    monkeypatch.setattr(scale, "PROJECT_ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    epoch = {"epoch": 2, "wall": 4.0, "compute": 3.5, "data_wait": 0.3, "valid": 0.1, "checkpoint": 0.1,
             "steps": 12, "rate": 12 * 8192 * 50 / 4.0}
    rows = [{"products": 100_000, "kind": "cnn", "threads": 2, "workers": 1, "step_rate": 1.6e6,
             "epochs": [{**epoch, "epoch": 1, "wall": 5.0, "rate": 12 * 8192 * 50 / 5.0}, epoch],
             "driver_peak_mib": 900.0, "worker_peak_mib": 1000.0, "worker_private_peak_mib": 800.0}]
    lines = "\n".join(scale.report(rows, scale.options(["kind=cnn"]), ["products=100000"]))
    assert "| 100,000 | 2 | 4.00 s | 3.50 s | 0.30 s | 0.10 s | 0.10 s | 1,228,800 | 1,600,000 | 77% |" in lines
    csv = pd.read_csv(tmp_path / "benchmarks" / "results" / "scale.csv")
    share = csv[(csv.benchmark == "scale/share_of_step") & csv.config.str.endswith("epoch=2")].value
    assert share.tolist() == [1_228_800 / 1.6e6]


def test_targets_table_judges_each_figure_from_the_results(tmp_path, monkeypatch):
    import json

    from benchmarks import targets

    monkeypatch.setattr(targets, "RESULTS", tmp_path)
    monkeypatch.setattr(targets, "DOC", tmp_path / "performance.md")
    pd.DataFrame({"kind": ["cnn", "cnn", "mlp"], "batch": [1024, 8192, 8192], "threads": 2,
                  "call": "forward+backward", "ms": 1.0,
                  "product_periods_per_s": [1.1e6, 1.6e6, 2.9e6]}).to_csv(tmp_path / "step_speed_cpu.csv", index=False)
    (tmp_path / "step_speed_cpu.run.json").write_text(json.dumps({"command": "python -m benchmarks.step_speed",
                                                                  "date": "2026-12-06", "load_at_start": 0.5}))
    pd.DataFrame({"benchmark": "scale/share_of_step", "config": ["products=100000;kind=cnn;threads=2;workers=1;epoch=2"],
                  "value": [0.75], "unit": "ratio"}).to_csv(tmp_path / "scale.csv", index=False)
    pd.DataFrame({"kind": "cnn", "seed": [0, 0, 1, 1], "seconds": [40.0, 110.0, 50.0, 110.0],
                  "gap_to_dp_policy_pct": [0.9, 0.25, 0.8, 0.5], "gap_se_pct": [0.02, 0.01, 0.03, 0.01]}
                 ).to_csv(tmp_path / "time_to_quality.csv", index=False)
    assert targets.main([]) == 0
    table = {line.split("|")[1].strip(): line.split("|")[3:5] for line in
             (tmp_path / "performance.md").read_text().splitlines() if line.startswith("| ") and "---" not in line}
    met = {k: v[1].strip() for k, v in table.items()}
    assert met["CNN policy step, 8,192 x 50, 2 threads (product-periods/s)"] == "yes"
    assert met["CNN step per product-period, 8,192 against 1,024"] == "yes"
    assert met["MLP policy step, 8,192 x 50, 2 threads (product-periods/s)"] == "**no**"  # 2.9M < 3M
    assert met["`jobs.train` epoch 2 on 100,000 products, cnn: job rate / step rate (wall time, Ray Data and "
               "validation included)"] == "yes"
    assert met["CNN policy, training time to within 1% of the exact optimum"] == "**no**"  # seed 1 at 50 s
    assert table["CNN policy, training time to within 1% of the exact optimum"][0].strip() == "seed 0: 40 s, seed 1: 50 s"
    assert met["CNN policy, training time to within 0.3% of the exact optimum"] == "**no**"  # seed 1 never
    assert met["CNN policy, largest standard error of the paired gap (points)"] == "yes"
    assert "not measured: no GPU machine was lent" in (tmp_path / "performance.md").read_text()
