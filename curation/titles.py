"""What "the same title" means, for every step that compares titles (dedupe's placeholder test,
the splits' title groups): one rule, so the two never disagree."""

from __future__ import annotations

import polars as pl


def normalise_title(titles: pl.Expr) -> pl.Expr:
    """Lower-case; punctuation, underscores and runs of whitespace to one space; trimmed:
    'Check-Scarf ' == 'check_scarf' == 'check scarf'. Letters keep their combining marks.

    Titles that are all punctuation keep their lower-cased text, so they do not all collide on ''.
    """
    lowered = titles.fill_null("").str.to_lowercase()
    cleaned = lowered.str.replace_all(r"[\W_]+", " ").str.strip_chars()
    return pl.when(cleaned == "").then(lowered.str.strip_chars()).otherwise(cleaned)
