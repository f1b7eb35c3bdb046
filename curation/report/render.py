"""The report as markdown (Dagster metadata: the tables) and as one standalone HTML page.

The page comes from a Jinja2 template with autoescape on, styled by a CSS file shipped beside
it; every catalogue string is escaped there. The markdown backslash-escapes CommonMark
punctuation, so a title like `[x](javascript:…)` stays text in Dagster's viewer.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from curation.report.plots import OTHER_COLOUR, OUTCOME_COLOURS
from curation.report.sections import Section
from curation.report.statistics import Table, fmt_cell, pct
from schemas.markdown import escape_markdown, markdown_table
from schemas.tables import OUTCOME_CURATED


def _align(t: Table) -> str:
    n = len(t.headers)
    return (t.align or "l" + "r" * (n - 1)).ljust(n, "l")


def _md_table(t: Table) -> str:
    lines = [f"**{escape_markdown(t.title)}**", ""]
    if t.rows:
        lines.append(markdown_table(t.headers, t.rows, align=_align(t), format_cell=fmt_cell))
    else:
        lines.append("None.")
    if t.note:
        lines += ["", f"*{escape_markdown(t.note)}*"]
    return "\n".join(lines)


def headline(counts: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in counts)
    curated = dict(counts).get(OUTCOME_CURATED, 0)
    others = [f"{n:,} {name}" for name, n in counts if n and name != OUTCOME_CURATED]
    head = f"{total:,} catalogue rows → {curated:,} curated ({pct(curated, total)})"
    return head + (" · " + " · ".join(others) if others else "")


def render_markdown(counts: list[tuple[str, int]], sections: list[Section]) -> str:
    parts = [f"**{escape_markdown(headline(counts))}**"]
    for s in sections:
        parts.append(f"### {s.heading}")
        parts += [_md_table(t) for t in s.tables]
    return "\n\n".join(parts) + "\n"


def _escape(value: object) -> object:
    # Every `{{ }}` value passes through here first. The stdlib escaper (`'` -> `&#x27;`) keeps
    # the page's bytes what they were before the template; Markup is not escaped again.
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("curation.report", "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = fmt_cell
    env.globals.update(zip=zip, align_of=_align)
    return env


def _stylesheet() -> Markup:
    css = resources.files("curation.report").joinpath("templates/report.css")
    return Markup(css.read_text(encoding="utf-8"))  # trusted: shipped with the package


def _cards(counts: list[tuple[str, int]], summary: dict[str, Any]) -> list[dict[str, str]]:
    total = sum(n for _, n in counts)
    cards = [("catalogue rows", f"{total:,}", "", "#2d3748")]
    cards += [
        (name, f"{n:,}", pct(n, total), OUTCOME_COLOURS.get(name, OTHER_COLOUR))
        for name, n in counts
    ]
    cards += [
        ("duplicate clusters", f"{summary['n_clusters']:,}", "", "#4a5568"),
        ("placeholder rows", f"{summary['n_placeholder_rows']:,}", "", "#4a5568"),
        ("conflicting clusters", f"{summary['n_label_conflicts']:,}", "", "#4a5568"),
    ]
    keys = ("label", "value", "extra", "colour")
    return [dict(zip(keys, card, strict=True)) for card in cards]


def _stack(counts: list[tuple[str, int]]) -> list[dict[str, Any]]:
    total = sum(n for _, n in counts)
    return [
        {
            "name": name,
            "rows": n,
            "count": f"{n:,}",
            "share": pct(n, total),
            "width": f"{100.0 * n / total:.3f}" if total else "0",
            "colour": OUTCOME_COLOURS.get(name, OTHER_COLOUR),
        }
        for name, n in counts
    ]


def render_html(
    counts: list[tuple[str, int]], sections: list[Section], summary: dict[str, Any]
) -> str:
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            css=_stylesheet(),
            headline=headline(counts),
            cards=_cards(counts, summary),
            stack=_stack(counts),
            sections=sections,
        )
    )
