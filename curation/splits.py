"""Leak-free, growth-stable train/validation/test splits.

Rows that could leak an answer across splits (duplicate images, colour variants sharing a title)
are grouped first; a whole group then goes to the split picked by a salted hash of its key, so a
row's split is a function of its group alone and does not depend on what else is in the catalogue.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.titles import normalise_title
from schemas.tables import CURATED_PRODUCTS_SCHEMA, DATASET_SPLITS_SCHEMA, SPLIT_NAMES

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
DEFAULT_SALT = "splits-v1"
RARE_STRATUM = "__rare__"
# Fallback strata are prefixed so a category2 code can never collide with a category3 code
# (both vocabularies contain "N.A.").
CATEGORY2_STRATUM_PREFIX = "category2="
# How many standard deviations of hash noise a split's row share may stray before a check
# calls it a bug: at 4 sd a correct assignment fails about once in 16,000 runs per split.
DEFAULT_TOLERANCE_SD = 4.0

SPLIT_RULE_DOC = """\
Split rule (splits-v1).
1. Grouping: rows are linked when they share a duplicate-image cluster (`cluster_id`) or a
   normalised title (lower-cased, punctuation turned into spaces, whitespace collapsed); each
   connected component is one group, so duplicates and same-title colour variants never
   straddle splits. `group_key` is the smallest normalised title in the group.
2. Assignment: u = sha256(salt + "\\x1f" + group_key) mapped to [0, 1); train if u < f_train,
   validation if u < f_train + f_validation, test otherwise. A row's split depends only on its
   group's key, so appending rows never moves an existing row, except when (a) a new row links
   two existing groups (they merge and take one key), (b) a new row joins a group through its
   duplicate cluster with a title that sorts before the group's key, or (c) rule 4 repairs or
   un-repairs a stratum.
3. Strata: `category3_code`; category3 values with fewer than `min_stratum_rows` rows fall back
   to `category2=<category2_code>` (counted over the fallen-back rows), and what is still too
   small goes to `__rare__`. Strata do not change the hash assignment, so row shares overall
   and per stratum are random around the fractions with sd = sqrt(p(1-p) * sum(s_i^2)) / N for
   groups of s_i rows: on 3,000 one-row groups that is 0.55 % (validation, test) and 0.73 %
   (train); with 3-row colour-variant groups 1.26 % (train). The proportion check allows 4 sd
   (+/-2.9 % absolute on 3,000 one-row groups, +/-5.1 % with 3-row groups).
4. Repair: a stratum with at least `min_stratum_rows` rows and at least as many groups as
   splits that the hash left without some split gets, for each missing split, one group moved
   in: among the groups with a row in the stratum whose split holds two or more of the
   stratum's groups, the one with the smallest
   sha256(salt + "\\x1frepair\\x1f" + split + "\\x1f" + group_key). Deterministic, one group per
   hole, and only while the hole exists.
"""


def _stable_unit(keys: Sequence[str], salt: str) -> np.ndarray:
    """sha256 -> [0, 1): unlike polars' hash this is stable across library versions and runs."""
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    if len(fractions) != len(SPLIT_NAMES) or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be {len(SPLIT_NAMES)} non-negative numbers")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {sum(fractions)}")
    return tuple(float(f) for f in fractions)


def hash_splits(
    group_keys: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    salt: str = DEFAULT_SALT,
) -> list[str]:
    """The split each group key hashes to, before any stratum repair (rule 2 of the doc)."""
    bounds = np.cumsum(_check_fractions(fractions))[:-1]
    idx = np.searchsorted(bounds, _stable_unit(group_keys, salt), side="right")
    return [SPLIT_NAMES[i] for i in idx]


def _group_keys(curated: pl.DataFrame) -> pl.Series:
    """Connected components over (row, title) and (row, cluster) edges; key = min title."""
    n = curated.height
    ids = curated.select(
        norm=normalise_title(pl.col("title")),
        title_node=normalise_title(pl.col("title")).rank("dense").cast(pl.Int64) - 1,
        # A missing cluster means "no known duplicates": the row's own id keeps it a singleton.
        cluster_node=pl.coalesce("cluster_id", "row_id").rank("dense").cast(pl.Int64) - 1,
    )
    n_titles = int(ids["title_node"].max() or 0) + 1 if n else 0
    rows = np.arange(n, dtype=np.int64)
    src = np.concatenate([rows, rows])
    dst = np.concatenate(
        [n + ids["title_node"].to_numpy(), n + n_titles + ids["cluster_node"].to_numpy()]
    )
    size = n + n_titles + (int(ids["cluster_node"].max() or 0) + 1 if n else 0)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return (
        ids.with_columns(component=pl.Series(labels[:n]))
        .select(pl.col("norm").min().over("component"))
        .to_series()
        .alias("group_key")
    )


def _strata(curated: pl.DataFrame, min_stratum_rows: int) -> pl.Series:
    """Rule 3: category3, else category2 (counted over the fallen-back rows), else rare."""
    c3 = pl.col("category3_code").fill_null("")
    c2 = pl.col("category2_code").fill_null("")
    c3_ok = pl.len().over(c3) >= min_stratum_rows
    fallback = pl.when(~c3_ok).then(c2)
    c2_ok = pl.len().over(fallback) >= min_stratum_rows
    return curated.select(
        pl.when(c3_ok)
        .then(c3)
        .when(c2_ok)
        .then(pl.lit(CATEGORY2_STRATUM_PREFIX) + c2)
        .otherwise(pl.lit(RARE_STRATUM))
        .alias("stratum")
    ).to_series()


def _repair_strata(frame: pl.DataFrame, min_stratum_rows: int, salt: str) -> dict[str, str]:
    """Rule 4: group_key -> forced split, for strata the hash left without some split.

    Holes are judged on rows (as `strata_missing_splits` judges them) and any group with a row
    in the stratum may be moved in; strata are visited in name order so the result is unique.
    """
    members = (
        frame.group_by("stratum")
        .agg(rows=pl.len(), keys=pl.col("group_key").unique().sort())
        .filter(
            (pl.col("rows") >= min_stratum_rows) & (pl.col("keys").list.len() >= len(SPLIT_NAMES))
        )
        .sort("stratum")
    )
    split_of = dict(frame.select("group_key", "split").unique("group_key").iter_rows())
    forced: dict[str, str] = {}
    for keys in members["keys"].to_list():
        counts = Counter(split_of[k] for k in keys)
        for missing in [s for s in SPLIT_NAMES if counts[s] == 0]:
            donors = [k for k in keys if counts[split_of[k]] >= 2]
            if not donors:
                continue
            chosen = donors[int(np.argmin(_stable_unit(donors, f"{salt}\x1frepair\x1f{missing}")))]
            counts[split_of[chosen]] -= 1
            counts[missing] += 1
            split_of[chosen] = forced[chosen] = missing
    return forced


def assign_splits(
    curated: pl.DataFrame,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    min_stratum_rows: int = 20,
    salt: str = DEFAULT_SALT,
    repair: bool = True,
) -> pl.DataFrame:
    """Curated rows + group_key, stratum, split (see SPLIT_RULE_DOC for the rule and its edges).

    `repair=False` gives the pure hash assignment (perfectly growth-stable, but small strata may
    lack a split, which `strata_missing_splits` then reports).
    """
    _check_fractions(fractions)
    frame = curated.select(
        [pl.col(c).cast(t) for c, t in CURATED_PRODUCTS_SCHEMA.items()]
    ).with_columns(group_key=_group_keys(curated), stratum=_strata(curated, min_stratum_rows))
    keys = frame["group_key"].unique(maintain_order=True).to_list()
    hashed = pl.DataFrame(
        {"group_key": keys, "split": hash_splits(keys, fractions, salt)},
        schema={"group_key": pl.String(), "split": pl.String()},
    )
    frame = frame.join(hashed, on="group_key", how="left", maintain_order="left")
    if repair and frame.height:
        forced = _repair_strata(frame, min_stratum_rows, salt)
        if forced:
            frame = frame.with_columns(
                split=pl.col("group_key").replace_strict(forced, default=pl.col("split"))
            )
    return frame.select([pl.col(c).cast(t) for c, t in DATASET_SPLITS_SCHEMA.items()])


def groups_straddling_splits(splits: pl.DataFrame) -> pl.DataFrame:
    """Leakage: groups (by group_key, by cluster and by normalised title) found in >1 split.

    Rechecked from the raw links rather than trusting group_key, so a bug in grouping shows up.
    """
    links = splits.select(
        "row_id",
        "split",
        group_key=pl.col("group_key"),
        cluster_id=pl.col("cluster_id"),
        title=normalise_title(pl.col("title")),
    )
    frames = [
        links.filter(pl.col(col).is_not_null())
        .group_by(col)
        .agg(
            n_splits=pl.col("split").n_unique(),
            splits=pl.col("split").unique().sort(),
            n_rows=pl.len(),
        )
        .filter(pl.col("n_splits") > 1)
        .select(link=pl.lit(col), key=pl.col(col), splits="splits", n_rows="n_rows")
        for col in ("group_key", "cluster_id", "title")
    ]
    return pl.concat(frames).sort("link", "key")


def strata_missing_splits(splits: pl.DataFrame, min_stratum_rows: int = 20) -> pl.DataFrame:
    """Strata big enough to split (rows and groups) that still lack one of the splits."""
    return (
        splits.group_by("stratum")
        .agg(
            n_rows=pl.len(),
            n_groups=pl.col("group_key").n_unique(),
            present=pl.col("split").unique().sort(),
        )
        .filter((pl.col("n_rows") >= min_stratum_rows) & (pl.col("n_groups") >= len(SPLIT_NAMES)))
        .with_columns(
            # In SPLIT_NAMES order; built from per-row expressions so an empty frame works.
            missing=pl.concat_list(
                [
                    pl.when(~pl.col("present").list.contains(name)).then(pl.lit(name))
                    for name in SPLIT_NAMES
                ]
            ).list.drop_nulls()
        )
        .filter(pl.col("missing").list.len() > 0)
        .select("stratum", "n_rows", "n_groups", "missing")
        .sort("stratum")
    )


def split_fractions(splits: pl.DataFrame) -> dict[str, float]:
    """Share of rows per split (0.0 for an absent split)."""
    counts = dict(splits.group_by("split").len().iter_rows())
    total = max(splits.height, 1)
    return {name: counts.get(name, 0) / total for name in SPLIT_NAMES}


def proportion_tolerance(
    splits: pl.DataFrame,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    z: float = DEFAULT_TOLERANCE_SD,
) -> float:
    """z standard deviations of a split's row share under group-level hashing.

    A split's row count is a sum of group sizes s_i, each in with probability p, so its share has
    sd = sqrt(p(1-p) * sum(s_i^2)) / N; groups make the noise larger than a per-row coin flip.
    """
    sizes = splits.group_by("group_key").len()["len"].cast(pl.Float64).to_numpy()
    total = sizes.sum()
    if total == 0:
        return 0.0
    spread = math.sqrt(float((sizes**2).sum())) / total
    return max(z * math.sqrt(p * (1 - p)) * spread for p in _check_fractions(fractions))


def split_proportion_errors(
    splits: pl.DataFrame,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    tolerance: float | None = None,
) -> dict[str, dict[str, float]]:
    """Splits whose row share is off target by more than `tolerance`; empty dict means OK.

    `tolerance=None` uses `proportion_tolerance` (4 sd of the noise this frame's group sizes
    imply), so a small or clumpy catalogue is not failed for what hashing does by chance.
    """
    if tolerance is None:
        tolerance = proportion_tolerance(splits, fractions)
    actual = split_fractions(splits)
    errors: dict[str, dict[str, float]] = {}
    for name, target in zip(SPLIT_NAMES, _check_fractions(fractions), strict=True):
        error = actual[name] - target
        if abs(error) > tolerance:
            errors[name] = {"expected": target, "actual": actual[name], "error": error}
    return errors


def split_counts_table(splits: pl.DataFrame) -> pl.DataFrame:
    """category3_code x split row counts (plus a total column) for metadata and the card."""
    counts = (
        splits.group_by("category3_code", "split")
        .len()
        .pivot(on="split", index="category3_code", values="len")
    )
    for name in SPLIT_NAMES:
        if name not in counts.columns:
            counts = counts.with_columns(pl.lit(0, dtype=pl.UInt32).alias(name))
    return (
        counts.select("category3_code", *SPLIT_NAMES)
        .fill_null(0)
        .with_columns(total=pl.sum_horizontal(*SPLIT_NAMES))
        .sort("category3_code")
    )
