"""Exact and near-duplicate image clusters, placeholder images and label conflicts.

Rows whose images are the same photo (same bytes, or a re-encoded / resized / slightly cropped
copy) are grouped so that one canonical row goes on to training and duplicates never straddle
splits. Two things that look like duplicates but are data-quality problems are flagged, not
merged away: placeholder images shared by unrelated products, and clusters whose rows disagree
on the label.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.dedupe_confirm import DEFAULT_RULE, DedupeRule, confirmed_pairs, with_hash_columns
from curation.titles import normalise_title
from schemas.tables import DUPLICATE_CLUSTERS_SCHEMA, IMAGE_HASHES_SCHEMA, empty_frame

# A cluster is a placeholder when fewer than this share of its rows carry the cluster's most
# common title (or one close to it): a real product photo is reused by colour variants that
# share a title, a "no image" placeholder by products that share nothing.
PLACEHOLDER_MAX_RELATED_SHARE = 0.5
# Titles at least this token-Jaccard-similar to the most common title count as related.
RELATED_TITLE_JACCARD = 0.5

# ---------------------------------------------------------------------------------------------
# Clusters over catalogue rows


def _sha_components(shas: pl.DataFrame, rule: DedupeRule) -> np.ndarray:
    """Connected-component label per row of `shas` (distinct sha256 with their hashes).

    Nodes are distinct hash rows (every view, every colour): images hashing identically are
    linked anyway, and collapsing them keeps a flood of look-alike files (blank tiles) from
    expanding into s^2 pairs. Images with no hash (undecodable) only ever match their own bytes.
    """
    ok = (shas["phash"].is_not_null() & shas["dhash"].is_not_null()).to_numpy()
    hashed = shas.filter(pl.Series(ok)).drop("sha256", "hash_version")
    groups = hashed.with_row_index("member").group_by(
        [c for c in hashed.columns if c != "member"], maintain_order=True
    )
    grouped = groups.agg("member").with_row_index("node")
    node_of = grouped.select("node", "member").explode("member").sort("member")["node"]
    n_nodes = grouped.height
    pairs = confirmed_pairs(grouped.drop("node", "member"), rule)
    a, b = pairs[:, 0], pairs[:, 1]
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n_nodes, n_nodes))
    node_labels = connected_components(graph, directed=False)[1]
    labels = np.empty(shas.height, np.int64)
    labels[ok] = node_labels[node_of.to_numpy()]
    labels[~ok] = n_nodes + np.arange(int((~ok).sum()))
    return labels


def _jaccard(a: str, b: str) -> float:
    ta, tb = set(a.split()), set(b.split())
    return len(ta & tb) / len(ta | tb) if ta | tb else 1.0


def _is_placeholder(titles: list[str]) -> bool:
    """True when fewer than half of the titles match (or resemble) the most common one."""
    top = Counter(titles).most_common(1)[0][0]
    related = sum(t == top or _jaccard(t, top) >= RELATED_TITLE_JACCARD for t in titles)
    return related < PLACEHOLDER_MAX_RELATED_SHARE * len(titles)


def _placeholder_expr(rows: pl.DataFrame, min_rows: int) -> pl.Expr:
    """Rows whose image (its exact bytes, or its whole near-duplicate cluster) is shared by at
    least min_rows rows with unrelated titles."""
    flagged = pl.lit(False)
    for key in ("sha256", "component"):
        big = (
            rows.group_by(key)
            .agg(pl.col("title_norm"))
            .filter(pl.col("title_norm").list.len() >= min_rows)
        )
        keys = sorted(k for k, titles in big.iter_rows() if _is_placeholder(titles))
        flagged = flagged | pl.col(key).is_in(pl.Series(keys, dtype=rows.schema[key]))
    return flagged


def _with_components(rows: pl.DataFrame, hashes: pl.DataFrame, rule: DedupeRule) -> pl.DataFrame:
    shas = (
        rows.select("sha256")
        .unique()
        .sort("sha256")
        .join(hashes.unique(subset="sha256", keep="first"), on="sha256", how="left")
    )
    labels = _sha_components(shas, rule)
    shas = shas.with_columns(component=pl.Series(labels, dtype=pl.Int64))
    # Only the columns the clusters need travel on: the other hash columns would be carried
    # (and copied by every sort and join below) for each row, about 100 bytes a row.
    return rows.join(shas.select("sha256", "phash", "component"), on="sha256", how="left")


def _with_canonical(rows: pl.DataFrame) -> pl.DataFrame:
    """Attach each component's canonical row: largest picture, then earliest in the source."""
    canonical = (
        rows.sort(["component", "area", "row_index"], descending=[False, True, False])
        .group_by("component", maintain_order=True)
        .first()
        .select(
            "component",
            canonical_row_id="row_id",
            canonical_sha256="sha256",
            canonical_phash="phash",
            canonical_category3_code="category3_code",
            canonical_full_price="full_price",
        )
    )
    return rows.join(canonical, on="component", how="left")


def duplicate_clusters(
    images: pl.DataFrame,
    hashes: pl.DataFrame,
    rule: DedupeRule = DEFAULT_RULE,
    placeholder_min_rows: int = 5,
) -> pl.DataFrame:
    """One row per image row (sha256 not null), in row_index order: its cluster and flags.

    `images` has row_id, row_index, sha256, width, height, title, category3_code, full_price;
    `hashes` is an image_hashes table. Rows sharing a sha256 are exact duplicates; images the
    rule calls the same photo (`curation.dedupe_confirm`) are near duplicates, and clusters are
    the connected components of both. Rows with a null sha256 have no image to
    compare and are left out. Placeholders and label conflicts are flagged, never merged away.
    """
    rows = (
        images.filter(pl.col("sha256").is_not_null())
        .sort("row_index")
        .with_columns(
            area=(pl.col("width").fill_null(0) * pl.col("height").fill_null(0)),
            title_norm=normalise_title(pl.col("title")),
        )
    )
    if rows.is_empty():
        return empty_frame(DUPLICATE_CLUSTERS_SCHEMA)
    hashes = with_hash_columns(hashes).select(list(IMAGE_HASHES_SCHEMA)).cast(IMAGE_HASHES_SCHEMA)
    rows = _with_canonical(_with_components(rows, hashes, rule))
    same_image = pl.col("sha256") == pl.col("canonical_sha256")
    out = rows.with_columns(
        cluster_id=pl.col("canonical_row_id"),
        cluster_size=pl.len().over("component"),
        is_canonical=pl.col("row_id") == pl.col("canonical_row_id"),
        hamming_to_canonical=pl.when(same_image)
        .then(0)
        .otherwise(pl.col("phash").xor(pl.col("canonical_phash")).bitwise_count_ones()),
        match_kind=pl.when(pl.col("row_id") == pl.col("canonical_row_id"))
        .then(pl.lit("canonical"))
        .when(same_image)
        .then(pl.lit("exact"))
        .otherwise(pl.lit("near")),
        is_placeholder=_placeholder_expr(rows, placeholder_min_rows),
        label_conflict=pl.col("category3_code").ne_missing(pl.col("canonical_category3_code"))
        | pl.col("full_price").ne_missing(pl.col("canonical_full_price")),
    )
    return out.select(list(DUPLICATE_CLUSTERS_SCHEMA)).cast(DUPLICATE_CLUSTERS_SCHEMA)
