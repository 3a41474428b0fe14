"""Shared command-line handling: key=value arguments, one-line errors, exit code 2."""
from __future__ import annotations

import sys
from typing import Callable

from pipeline.config import ConfigError
from pipeline.errors import DataError, NumericalFault, TrackingUnavailable
from pipeline.reporting import logs

USAGE = """usage: python -m jobs.{job} [GROUP=NAME ...] [key=value ...]

Configuration: conf/config.yaml, then group files (experiment=NAME reads
conf/experiment/NAME.yaml), then key=value overrides, e.g.
  python -m jobs.{job} experiment=smoke train.epochs=3 name=my-run
"""


def run(job: str, main: Callable[[list[str]], int | None]) -> None:
    args = sys.argv[1:]
    logs.setup()  # the job's lines, those of the layers below reporting included: [topic] message
    if any(a in ("-h", "--help") for a in args):
        doc = sys.modules[main.__module__].__doc__ or ""
        print(doc.strip() + "\n\n" + USAGE.format(job=job))
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
