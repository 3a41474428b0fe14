"""Shared command-line handling: key=value arguments, one-line errors, exit code 2; and the
console scripts (``sidbp-train`` ... in pyproject.toml), one per job module."""
from __future__ import annotations

import importlib
import sys
from typing import Callable

from pipeline.config import ConfigError
from pipeline.errors import DataError, NumericalFault, TrackingUnavailable
from pipeline.reporting import logs

USAGE = """usage: sidbp-{script} [GROUP=NAME ...] [key=value ...]
   or: python -m jobs.{job} [GROUP=NAME ...] [key=value ...]

Configuration: conf/config.yaml, then group files (experiment=NAME reads
conf/experiment/NAME.yaml), then key=value overrides, e.g.
  python -m jobs.{job} experiment=smoke train.epochs=3 name=my-run
Relative paths (output_dir, data.path, ..., a sqlite:/// tracking URI) are taken
from the current folder. The conf/ folder in use: {conf}
"""


def run(job: str, main: Callable[[list[str]], int | None]) -> None:
    args = sys.argv[1:]
    logs.setup()  # the job's lines, those of the layers below reporting included: [topic] message
    if any(a in ("-h", "--help") for a in args):
        doc = sys.modules[main.__module__].__doc__ or ""
        from pipeline.config import CONF_DIR
        print(doc.strip() + "\n\n" + USAGE.format(job=job, script=job.replace("_", "-"), conf=CONF_DIR))
        sys.exit(0)
    try:
        code = main(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    except (FileNotFoundError, DataError) as e:  # a data path that is not there; unusable data
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrackingUnavailable as e:  # the MLflow server does not answer at the start
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NumericalFault as e:  # training stopped on a non-finite loss or gradient
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


# ---------------------------------------------------------------- console scripts
# pyproject.toml's [project.scripts]: sidbp-<job> = "jobs._cli:<job>" (sidbp-prepare-data for
# prepare_data), one per job module. Each imports its module only when called and runs it as
# ``python -m jobs.<job>`` does.


def _entry(job: str) -> Callable[[], None]:
    def main() -> None:
        run(job, importlib.import_module(f"jobs.{job}").main)

    main.__name__ = main.__qualname__ = job
    main.__doc__ = f"sidbp-{job.replace('_', '-')}: python -m jobs.{job}"
    return main


train = _entry("train")
evaluate = _entry("evaluate")
sweep = _entry("sweep")
recommend = _entry("recommend")
promote = _entry("promote")
compare = _entry("compare")
benchmark = _entry("benchmark")
favorita = _entry("favorita")
prepare_data = _entry("prepare_data")
sipn = _entry("sipn")
structure = _entry("structure")
screenshots = _entry("screenshots")
