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


def write_block(path: Path, key: str, body: str, header: str = "") -> None:
    """Replace (or append) the block ``key`` in the file at ``path``; a new file starts
    with ``header``."""
    text = path.read_text() if path.exists() else header
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_block(text, key, body))
