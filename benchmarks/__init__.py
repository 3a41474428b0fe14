"""Performance benchmarks (run as modules: ``python -m benchmarks.<name>``); results go to
``benchmarks/results/`` and the docs. Quality benchmarks against exact optima are
``python -m jobs.benchmark``."""

from pipeline.config import ConfigError


def key_values(args: list[str], defaults: dict) -> dict:
    """``key=value`` arguments over ``defaults``, each value converted to its default's type
    (a bool from 1/true/yes); a key not in ``defaults`` is a ``ConfigError``."""
    opts = dict(defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"expected one of {', '.join(f'{k}=...' for k in defaults)}, got {arg!r}")
        default = defaults[key]
        opts[key] = value.lower() in ("1", "true", "yes") if isinstance(default, bool) else type(default)(value)
    return opts


def run_script(main) -> None:
    """``sys.exit(main(argv))``; a ``ConfigError`` is one line on stderr and exit code 2."""
    import sys

    from pipeline.reporting import logs

    logs.setup()
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)


def record_run(name: str, command: str, load_at_start: float) -> None:
    """``benchmarks/results/<name>.run.json``: the command, the date and the load average at
    its start of the run whose results are ``benchmarks/results/<name>.csv`` (read by
    ``benchmarks.targets``)."""
    import datetime
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent / "results" / f"{name}.run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command, "load_at_start": round(load_at_start, 2),
                                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
                               indent=1) + "\n")
