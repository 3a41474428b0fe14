"""One logging format for everything a job tells its user: ``[topic] message`` on standard
output, one line per event, as ``ray job logs`` and a terminal show it.

    log = logs.get("train")        # logger "sidbp.train"
    log.info("epoch 1/12 ...")     # -> [train] epoch 1/12 ...
    logs.get("").info(table)       # -> the text alone (results tables, report paths)

The handler writes to whatever ``sys.stdout`` is at the time (pytest's capture, a Ray
worker's redirected stream), and is installed once, on first use.
"""
from __future__ import annotations

import logging
import sys

ROOT = "sidbp"


class _Stdout(logging.StreamHandler):
    """A stream handler bound to the current ``sys.stdout``, not the one at creation."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        topic = record.name[len(ROOT) + 1:] if record.name.startswith(ROOT + ".") else ""
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"[{topic}] {text}" if topic else text


def setup(level: int = logging.INFO) -> logging.Logger:
    """Install the project's handler on the ``sidbp`` logger (once; idempotent)."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _Stdout) for h in root.handlers):
        handler = _Stdout()
        handler.setFormatter(_Format())
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level)
    return root


def get(topic: str) -> logging.Logger:
    """The logger of one topic (``train``, ``data``, ``eval``, ``benchmark lost_sales``, ...);
    ``""``: plain text with no prefix."""
    setup()
    return logging.getLogger(f"{ROOT}.{topic}" if topic else ROOT)
