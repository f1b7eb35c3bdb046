"""One title normaliser for dedupe and splits."""

from __future__ import annotations

import polars as pl

from curation.titles import normalise_title


def test_punctuation_underscores_case_and_spacing_do_not_make_a_new_title() -> None:
    titles = ["Check-Scarf ", "check_scarf", "  CHECK   scarf", "Crème brûlée", "!!!", None]
    out = pl.DataFrame({"t": titles}).select(normalise_title(pl.col("t")))["t"].to_list()
    assert out[:3] == ["check scarf"] * 3
    assert out[3] == "crème brûlée"
    assert out[4] == "!!!" and out[5] == ""  # all punctuation: not collapsed onto ''
