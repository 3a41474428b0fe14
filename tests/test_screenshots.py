"""The pure helpers of ``jobs.screenshots`` (no server, no browser): its own arguments apart from
the configuration's, the registered model's name from a sweep's challenger tag, the blank-screenshot
check, and a bad argument as one line and exit code 2."""
import sys

import numpy as np
import pytest
from PIL import Image

from jobs import _cli, screenshots
from jobs.screenshots import ScreenshotError, check_screenshot, image_stats, model_name, split_args
from pipeline.errors import DataError


def test_split_args_takes_out_and_chromium_and_passes_the_rest_on():
    config_args, opts = split_args(["mlflow.experiment=x", "out=/tmp/shots", "experiment=smoke", "chromium=/c"])
    assert config_args == ["mlflow.experiment=x", "experiment=smoke"]
    assert opts == {"out": "/tmp/shots", "chromium": "/c"}
    assert split_args([])[1] == screenshots.DEFAULTS


def test_model_name_of_a_challenger_tag():
    assert model_name("models:/sidbp-lost_sales/3") == "sidbp-lost_sales"
    with pytest.raises(DataError, match="models:/NAME/VERSION"):
        model_name("runs:/abc/checkpoint")


def test_a_uniform_screenshot_is_blank_and_a_busy_one_is_not(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (600, 400), "white").save(blank)
    assert image_stats(blank)[0] == 1
    with pytest.raises(ScreenshotError, match="looks blank: 1 distinct colours"):
        check_screenshot(blank)
    busy = tmp_path / "busy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(busy)
    check_screenshot(busy)


def test_a_bad_argument_is_one_line_and_exit_code_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["jobs/screenshots.py", "no_such_key=1"])
    with pytest.raises(SystemExit) as exit_:
        _cli.run("screenshots", screenshots.main)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("config error:") and err.count("\n") == 1
