from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.splits import (
    CATEGORY2_STRATUM_PREFIX,
    DEFAULT_FRACTIONS,
    RARE_STRATUM,
    SPLIT_RULE_DOC,
    assign_splits,
    groups_straddling_splits,
    hash_splits,
    proportion_tolerance,
    split_counts_table,
    split_fractions,
    split_proportion_errors,
    strata_missing_splits,
)
from curation.titles import normalise_title
from schemas.tables import CURATED_PRODUCTS_SCHEMA, DATASET_SPLITS_SCHEMA, SPLIT_NAMES

# Spellings of one product that must land in one group (case, punctuation, spacing).
TITLE_SPELLINGS = ("{} Scarf", "{} scarf!", "  {}  SCARF", "{}-scarf")


def curated_frame(records: list[dict]) -> pl.DataFrame:
    """A CURATED_PRODUCTS_SCHEMA frame: given fields, sensible defaults for the rest."""
    rows = []
    for i, rec in enumerate(records):
        row = {c: None for c in CURATED_PRODUCTS_SCHEMA}
        row |= {"row_index": i, "row_id": f"r{i:06d}", "full_price": 100.0 + i}
        row |= {"category1_code": "WOMAN", "category2_code": "ACCESSORIES"}
        row |= {"category3_code": "SCARVES", "cluster_id": None}
        row |= rec
        rows.append(row)
    return pl.DataFrame(rows, schema=CURATED_PRODUCTS_SCHEMA)


record_strategy = st.fixed_dictionaries(
    {
        "title": st.builds(
            lambda i, s: TITLE_SPELLINGS[s].format(f"Check {i}"),
            st.integers(0, 40),
            st.integers(0, len(TITLE_SPELLINGS) - 1),
        ),
        "cluster_id": st.one_of(st.none(), st.sampled_from([f"c{i}" for i in range(15)])),
        "category3_code": st.sampled_from(["SCARVES", "BAGS", "HATS", "N.A."]),
        "category2_code": st.sampled_from(["ACCESSORIES", "N.A."]),
    }
)
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_no_straddle(splits: pl.DataFrame) -> None:
    by = splits.with_columns(norm=normalise_title(pl.col("title")))
    for col in ("group_key", "norm"):
        assert by.group_by(col).agg(pl.col("split").n_unique())["split"].max() == 1
    clustered = by.filter(pl.col("cluster_id").is_not_null())
    if clustered.height:
        assert clustered.group_by("cluster_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert groups_straddling_splits(splits).height == 0


@fast
@given(records=st.lists(record_strategy, min_size=1, max_size=80), repair=st.booleans())
def test_groups_never_straddle_splits(records: list[dict], repair: bool) -> None:
    splits = assign_splits(curated_frame(records), min_stratum_rows=5, repair=repair)
    assert splits.schema == pl.Schema(DATASET_SPLITS_SCHEMA)
    assert splits["row_id"].to_list() == [f"r{i:06d}" for i in range(len(records))]
    assert set(splits["split"]) <= set(SPLIT_NAMES)
    assert_no_straddle(splits)


def test_spellings_and_clusters_join_one_group() -> None:
    frame = curated_frame(
        [{"title": t.format("Giant")} for t in TITLE_SPELLINGS]
        + [{"title": "Other", "cluster_id": "c1"}, {"title": "Giant Scarf", "cluster_id": "c1"}]
        + [{"title": "Lonely"}]
    )
    splits = assign_splits(frame)
    keys = splits["group_key"].to_list()
    assert set(keys[:6]) == {"giant scarf"}  # min normalised title of the component
    assert keys[6] == "lonely"


@st.composite
def grown_catalogues(draw: st.DrawFn) -> tuple[list[dict], list[dict]]:
    """A catalogue, and it grown by rows with new titles and no cluster links (so no existing
    groups can merge)."""
    base = draw(st.lists(record_strategy, min_size=1, max_size=60))
    new_titles = draw(st.lists(st.integers(100, 200), min_size=1, max_size=30))
    return base, base + [{"title": f"New {i}", "category3_code": "BAGS"} for i in new_titles]


def splits_before_and_after(
    catalogues: tuple[list[dict], list[dict]], repair: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The base rows' splits before and after the catalogue grew."""
    base, grown = catalogues
    before = assign_splits(curated_frame(base), min_stratum_rows=5, repair=repair)
    after = assign_splits(curated_frame(grown), min_stratum_rows=5, repair=repair)
    return before, after.head(len(base))


@fast
@given(catalogues=grown_catalogues())
def test_appending_rows_never_moves_existing_rows(
    catalogues: tuple[list[dict], list[dict]],
) -> None:
    before, after = splits_before_and_after(catalogues, repair=False)
    assert before.select("row_id", "group_key", "split").equals(
        after.select("row_id", "group_key", "split")
    )


@fast
@given(catalogues=grown_catalogues())
def test_with_repair_only_repaired_groups_move(catalogues: tuple[list[dict], list[dict]]) -> None:
    before, after = splits_before_and_after(catalogues, repair=True)
    moved = before.filter(before["split"] != after["split"])
    for frame in (before, after):
        hashed = pl.Series(hash_splits(frame["group_key"].to_list()))
        frame_repaired = set(frame.filter(frame["split"] != hashed)["group_key"])
        moved = moved.filter(~pl.col("group_key").is_in(frame_repaired))
    assert moved.height == 0


def test_merging_two_groups_moves_one_of_them_together() -> None:
    # The documented edge: a new row linking two groups merges them into one split.
    titles = [f"Title {i}" for i in range(200)]
    base = [{"title": t, "cluster_id": f"c{i}"} for i, t in enumerate(titles)]
    before = assign_splits(curated_frame(base), repair=False)
    a, b = before.filter(pl.col("split") == "train")[0], before.filter(pl.col("split") == "test")[0]
    bridge = {"title": a["title"][0], "cluster_id": b["cluster_id"][0]}
    after = assign_splits(curated_frame([*base, bridge]), repair=False)
    pair = after.filter(pl.col("row_id").is_in([a["row_id"][0], b["row_id"][0]]))
    assert pair["split"].n_unique() == 1
    assert pair["group_key"].n_unique() == 1
    moved = before["split"] != after.head(len(base))["split"]
    assert moved.sum() == 1


def test_assignment_ignores_row_order() -> None:
    frame = curated_frame([{"title": f"T{i % 70}", "cluster_id": f"c{i % 13}"} for i in range(300)])
    splits = assign_splits(frame).sort("row_id")
    shuffled = assign_splits(frame.sample(fraction=1.0, shuffle=True, seed=3)).sort("row_id")
    assert splits.equals(shuffled)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(salt=st.text(min_size=1, max_size=8), group_size=st.sampled_from([1, 3]))
def test_proportions_within_tolerance_on_thousands_of_rows(salt: str, group_size: int) -> None:
    # 3,000 rows over 12 categories, in one-row groups or in colour-variant groups of three.
    records = [
        {"title": f"Product {i // group_size}", "category3_code": f"CAT{(i // group_size) % 12}"}
        for i in range(3000)
    ]
    splits = assign_splits(curated_frame(records), salt=salt)
    tolerance = proportion_tolerance(splits)
    # 4 sd of the train share: 4 * 0.4 * sqrt(group_size / 3000).
    assert tolerance == pytest.approx(1.6 * (group_size / 3000) ** 0.5)
    assert split_proportion_errors(splits, DEFAULT_FRACTIONS) == {}
    fractions = split_fractions(splits)
    for name, target in zip(SPLIT_NAMES, DEFAULT_FRACTIONS, strict=True):
        assert abs(fractions[name] - target) <= tolerance
    assert strata_missing_splits(splits, 20).height == 0


def test_proportion_errors_reports_skewed_splits() -> None:
    splits = assign_splits(curated_frame([{"title": f"T{i}"} for i in range(500)]))
    skewed = splits.with_columns(split=pl.lit("train"))
    errors = split_proportion_errors(skewed, DEFAULT_FRACTIONS, 0.03)
    assert set(errors) == {"train", "validation", "test"}
    assert errors["validation"]["actual"] == 0.0
    assert errors["train"]["error"] == pytest.approx(0.2)


def test_strata_fall_back_to_category2_then_rare() -> None:
    records = (
        [{"title": f"S{i}", "category3_code": "SCARVES"} for i in range(25)]
        + [
            {"title": f"B{i}", "category3_code": f"BAG{i % 3}", "category2_code": "BAGS"}
            for i in range(21)
        ]
        + [{"title": f"H{i}", "category3_code": "HATS", "category2_code": "HEAD"} for i in range(4)]
    )
    strata = assign_splits(curated_frame(records), min_stratum_rows=20)["stratum"].to_list()
    assert strata[:25] == ["SCARVES"] * 25
    assert strata[25:46] == [f"{CATEGORY2_STRATUM_PREFIX}BAGS"] * 21
    assert strata[46:] == [RARE_STRATUM] * 4


def _salt_leaving_a_hole(frame: pl.DataFrame) -> str:
    for i in range(500):
        splits = assign_splits(frame, salt=f"s{i}", repair=False)
        if strata_missing_splits(splits, 20).height:
            return f"s{i}"
    raise AssertionError("no salt leaves a hole")


def test_repair_fills_a_stratum_the_hash_left_without_a_split() -> None:
    # 22 one-row groups: P(no test row) = 0.9**22 ~ 10 %, so some salt leaves a hole.
    frame = curated_frame([{"title": f"Scarf {i}"} for i in range(22)])
    salt = _salt_leaving_a_hole(frame)
    raw = assign_splits(frame, salt=salt, repair=False)
    hole = strata_missing_splits(raw, 20)
    assert hole["stratum"].to_list() == ["SCARVES"]
    repaired = assign_splits(frame, salt=salt)
    assert strata_missing_splits(repaired, 20).height == 0
    assert (raw["split"] != repaired["split"]).sum() == len(hole["missing"][0])
    assert_no_straddle(repaired)


def test_too_few_groups_is_not_a_missing_split() -> None:
    # 30 rows but two titles: cannot fill three splits without a straddle, so not reported.
    frame = curated_frame([{"title": f"Scarf {i % 2}"} for i in range(30)])
    assert strata_missing_splits(assign_splits(frame), 20).height == 0


def test_check_detects_a_planted_straddle() -> None:
    frame = curated_frame([{"title": f"Scarf {i % 40}", "cluster_id": f"c{i}"} for i in range(80)])
    splits = assign_splits(frame)
    assert groups_straddling_splits(splits).height == 0
    victim = splits["row_id"][0]
    other = next(s for s in SPLIT_NAMES if s != splits["split"][0])
    planted = splits.with_columns(
        split=pl.when(pl.col("row_id") == victim).then(pl.lit(other)).otherwise("split")
    )
    found = groups_straddling_splits(planted)
    assert set(found["link"]) == {"group_key", "title"}
    assert set(found["key"]) == {splits["group_key"][0], "scarf 0"}
    assert all(len(s) == 2 for s in found["splits"])


def test_split_counts_table_adds_up() -> None:
    records = [{"title": f"T{i}", "category3_code": f"C{i % 4}"} for i in range(400)]
    splits = assign_splits(curated_frame(records))
    table = split_counts_table(splits)
    assert table.columns == ["category3_code", *SPLIT_NAMES, "total"]
    assert table["category3_code"].to_list() == ["C0", "C1", "C2", "C3"]
    assert table["total"].to_list() == [100] * 4
    assert table.select(SPLIT_NAMES).sum().row(0) == tuple(
        splits.filter(pl.col("split") == s).height for s in SPLIT_NAMES
    )


def test_bad_fractions_rejected_and_empty_input_ok() -> None:
    frame = curated_frame([{"title": "A"}])
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(frame, fractions=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError):
        assign_splits(frame, fractions=(0.9, 0.1))
    empty = assign_splits(curated_frame([]))
    assert empty.height == 0 and empty.schema == pl.Schema(DATASET_SPLITS_SCHEMA)
    assert "group_key" in SPLIT_RULE_DOC and "sha256" in SPLIT_RULE_DOC
