"""The project as an installed package: a wheel built from the sources holds every package,
the configs (conf/ as package data in pipeline/conf) and a console script per job; installed
outside the checkout, ``sidbp-train experiment=smoke`` runs from an empty folder and writes its
outputs (``runs/``, ``mlflow.db``) there, nothing into the installed package.

The wheel is installed with ``pip install --no-deps --target`` and run by this interpreter
(whose environment has the dependencies, and the project installed editable: PYTHONPATH must
win over that, which is checked). The whole ``pip install .`` into a fresh environment is in
the README (Setup)."""
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_namespace_packages, find_packages

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pipeline", "jobs", "conf", "pyproject.toml", "README.md")
# a job run short: two Ray Train epochs on the smoke data, no costly baselines
SMOKE = ["experiment=smoke", "name=installed", "train.epochs=1", "eval.baselines=[best_constant]",
         "robustness.shocks=[]", "robustness.initial_multiples=[]", "mlflow.experiment=installed"]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def pip(*args: str, cwd: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", *args, "--no-index", "--disable-pip-version-check"], cwd=cwd,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the folder it is installed in, an environment that imports from there only)."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"  # a copy: a build in the checkout would leave build/ and stale files there
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheels"), str(src), cwd=tmp)
    wheel, = (tmp / "wheels").glob("sidbp-*.whl")
    site = tmp / "site"
    pip("install", "--no-deps", "--no-compile", "--target", str(site), str(wheel), cwd=tmp)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled", RAY_DATA_DISABLE_PROGRESS_BARS="1",
               MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK="true", PYTHONUNBUFFERED="1")
    return wheel, site, env


def test_the_wheel_holds_every_package_the_configs_and_a_script_per_job(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    # pyproject.toml lists the packages (for the conf/ mapping): none of the source tree's is left out
    packages = {p for p in find_packages(str(ROOT), include=["pipeline*", "jobs*"])}
    packages |= {f"pipeline.conf.{p}" for p in find_namespace_packages(str(ROOT / "conf"))} | {"pipeline.conf"}
    assert set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]) == packages
    for package in packages - {"pipeline.conf"} - {p for p in packages if p.startswith("pipeline.conf.")}:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    configs = {f"pipeline/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert "pipeline/conf/experiment/smoke.yaml" in configs and configs <= names, configs - names
    assert not any(n.startswith(("conf/", "runs/", "tests/")) for n in names)
    jobs = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if not p.stem.startswith("_"))
    for job in jobs:
        assert f"sidbp-{job.replace('_', '-')} = jobs._cli:{job}\n" in entry_points, job
    from jobs import _cli
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for script, target in scripts.items():
        assert callable(getattr(_cli, target.split(":")[1])) and script.startswith("sidbp-"), script


def test_sidbp_train_runs_from_an_empty_folder_and_writes_only_there(installed, tmp_path):
    _, site, env = installed
    script = site / "bin" / "sidbp-train"
    assert script.is_file()
    before = files_under(site)
    cwd = tmp_path / "work"
    cwd.mkdir()

    where = subprocess.run([sys.executable, "-c", "import pipeline, jobs, pipeline.config as c; "
                            "print(pipeline.__file__); print(jobs.__file__); print(c.CONF_DIR)"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(site / "pipeline" / "__init__.py"), str(site / "jobs" / "__init__.py"),
                     str(site / "pipeline" / "conf")], where  # the installed copy, not the checkout

    out = subprocess.run([sys.executable, str(script), "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "sidbp-train" in out.stdout and str(site / "pipeline" / "conf") in out.stdout

    started = time.monotonic()
    out = subprocess.run([sys.executable, str(script), *SMOKE], cwd=cwd, env=env, capture_output=True, text=True,
                         check=False, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"sidbp-train experiment=smoke: {time.monotonic() - started:.0f}s")
    assert (cwd / "mlflow.db").is_file()
    assert (cwd / "runs" / "installed" / "evaluation.csv").is_file()
    assert (cwd / "runs" / "data").is_dir()
    assert files_under(site) == before, sorted(files_under(site) - before)[:20]
