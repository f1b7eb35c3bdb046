"""One markdown-table writer: dataset cards, Dagster metadata, the data-quality report and
bench/RESULTS.md all go through `markdown_table`. It lives in `schemas`, the layer everything
may import (the GPU benchmark box has no curation).

Cells are often catalogue text, which is untrusted: every cell, header and caption is
backslash-escaped the CommonMark way, so a title like `[x](javascript:…)`, `<img onerror=…>` or
one with a `|` stays literal text instead of becoming a link, markup or a broken table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# Not "_": CommonMark ignores it inside words, and codes like download_failed stay readable.
_SPECIAL = re.compile(r"([\\`*\[\]<>|~#&!])")


def escape_markdown(text: str) -> str:
    """`text` as literal inline markdown on one line."""
    return _SPECIAL.sub(r"\\\1", text.replace("\r", " ").replace("\n", " "))


def _plain(value: object) -> str:
    return "" if value is None else str(value)


def markdown_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: str = "",
    max_chars: int | None = None,
    format_cell: Callable[[object], str] = _plain,
) -> str:
    """Rows as a markdown table.

    `align` has one letter per column, "r" for right-aligned (numbers), anything else left;
    `format_cell` turns a value into text (default: str, None as empty); `max_chars` clips long
    cells (None keeps them whole).
    """

    def cell(value: object) -> str:
        text = format_cell(value)
        if max_chars is not None and len(text) > max_chars:
            text = text[: max_chars - 1] + "…"
        return escape_markdown(text)

    aligns = align.ljust(len(headers), "l")
    lines = [
        "| " + " | ".join(escape_markdown(h) for h in headers) + " |",
        "|" + "".join("---:|" if a == "r" else "---|" for a in aligns[: len(headers)]),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
