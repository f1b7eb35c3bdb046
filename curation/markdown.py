"""One markdown-table writer for dataset cards and Dagster metadata."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], max_chars: int | None = None
) -> str:
    """Rows as a markdown table; `max_chars` clips long cells (None keeps them whole)."""

    def cell(value: object) -> str:
        # Catalogue text is free text: an unescaped "|" or newline would break the table.
        text = "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
        if max_chars is not None and len(text) > max_chars:
            return text[: max_chars - 1] + "…"
        return text

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
