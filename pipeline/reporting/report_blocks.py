"""Sections of the markdown reports that jobs regenerate, between marker comments."""
from __future__ import annotations

import re
from pathlib import Path


def replace_block(text: str, key: str, body: str) -> str:
    """``text`` with the block ``<!-- key -->`` .. ``<!-- /key -->`` holding ``body``:
    replaced where it is, or appended."""
    begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{begin}\n{body}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def read_block(text: str, key: str) -> str | None:
    """The body of the block ``key`` in ``text`` (None when it has none)."""
    found = re.search(re.escape(f"<!-- {key} -->\n") + r"(.*?)" + re.escape(f"\n<!-- /{key} -->"), text, re.S)
    return found.group(1) if found else None


def write_block(path: Path, key: str, body: str, header: str = "") -> None:
    """Replace (or append) the block ``key`` in the file at ``path``; a new file starts
    with ``header``."""
    text = path.read_text() if path.exists() else header
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_block(text, key, body))


def markdown_table(frame, formats: dict | None = None) -> str:
    """A pipe table of a DataFrame: its column names, then one row per row (the index is
    not shown). ``formats``: a format spec (``".4f"``, ``",.0f"``) or a function for the
    cells of some columns; other cells as ``str``; missing values (NaN, None) as empty
    cells. No trailing newline.

        | a | b |
        |---|---|
        | 1 | x |
    """
    import pandas as pd

    formats = formats or {}

    def cell(column, value) -> str:
        if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
            return ""
        how = formats.get(column)
        return how(value) if callable(how) else format(value, how) if how else str(value)

    def row(cells) -> str:
        return "| " + " | ".join(cells) + " |"

    columns = list(frame.columns)
    lines = [row(str(c) for c in columns), "|" + "---|" * len(columns)]
    lines += [row(cell(c, v) for c, v in zip(columns, values))
              for values in frame.itertuples(index=False, name=None)]
    return "\n".join(lines)
