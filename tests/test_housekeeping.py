"""Housekeeping of the package: it logs through ``pipeline.reporting.logs`` (no ``print``),
a run's params go to MLflow in batches, and Markdown tables come from one helper."""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline.config import flatten, load_config
from pipeline.reporting import logs
from pipeline.reporting.report_blocks import markdown_table

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"


def test_the_package_has_no_print_calls():
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert found == []


def test_a_topic_logger_prints_its_prefix_and_the_plain_one_the_text_alone(capsys):
    logs.get("data").info("train: 3 products")
    logs.get("").info("| a |")
    assert capsys.readouterr().out == "[data] train: 3 products\n| a |\n"


def test_tracker_start_logs_the_config_in_a_few_requests(tmp_path, monkeypatch):
    from pipeline.adapters.tracking import Tracker

    cfg = load_config([f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "name=batched"])
    calls = {"log_param": 0, "log_batch": 0}
    for name in calls:
        original = getattr(MlflowClient, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, counted)
    tracker = Tracker(cfg)
    run_id = tracker.start(cfg, kind="train")
    tracker.finish()
    params = flatten(cfg)
    assert len(params) > 100  # more than one batch holds
    assert calls["log_param"] == 0
    assert calls["log_batch"] <= 3
    logged = MlflowClient(tracker.uri).get_run(run_id).data.params
    assert logged == {k: v[:6000] for k, v in params.items()}


def test_markdown_table_renders_a_frame_exactly():
    frame = pd.DataFrame({"instance": ["p=4;L=0", "p=9;L=1"], "dp": [3.27741, 5.4382],
                          "gap": [0.0, float("nan")], "products": [1024, 100000]})
    text = markdown_table(frame, {"dp": ".4f", "gap": lambda v: f"{v:+.2f}%", "products": ","})
    assert text == ("| instance | dp | gap | products |\n"
                    "|---|---|---|---|\n"
                    "| p=4;L=0 | 3.2774 | +0.00% | 1,024 |\n"
                    "| p=9;L=1 | 5.4382 |  | 100,000 |")
