"""Which images are the same product photo: candidate pairs per view, confirmed by colour.

Every stored image has three views (`curation.images.views`): the whole picture, its content
box (uniform margins trimmed: letterboxing and framing undone) and its centre (untouched by a
corner badge). A pair is a candidate when one view's phash and dhash are both within that
view's limits, and a duplicate when that same view's colour signatures agree too: phash and
dhash see luminance only, so a colourway (the same shot, hue shifted: another product) is a
candidate on every view, and the colour look is what keeps it apart. `merge_colour_variants`
skips the colour look, for catalogues that want one row per design.

Limits chosen on the labelled set in tests/curation/test_dedupe.py (printed per edit kind
there; see `DEFAULT_RULE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from curation.hamming import near_duplicate_pairs, popcount64
from curation.images.views import SIGNATURE_BYTES, VIEWS
from schemas.tables import IMAGE_HASHES_SCHEMA

# Mean CIELAB chroma below which a picture has no colour worth comparing (grey products on
# grey backdrops measure 1-4), and the chroma ratio below which two pictures are different
# colourings (padding dilutes the whole view's chroma by at most ~1.8x, brightness by 1.1x).
MIN_MEAN_CHROMA = 4.0
MIN_CHROMA_RATIO = 0.5


@dataclass(frozen=True)
class ViewLimits:
    max_phash: int
    max_dhash: int


@dataclass(frozen=True)
class DedupeRule:
    """Per-view hash limits (a view missing here is not searched) and the colour limit."""

    views: dict[str, ViewLimits] = field(default_factory=dict)
    # CIELAB chroma distance (Delta a*b*) of the worst grid cell after the outliers.
    max_colour_distance: float = 0.0
    merge_colour_variants: bool = False

    def loosened(self, bits: int, colour: float) -> DedupeRule:
        """The rule with every limit widened: the demo draws products apart with a margin."""
        views = {
            name: ViewLimits(v.max_phash + bits, v.max_dhash + bits)
            for name, v in self.views.items()
        }
        return replace(self, views=views, max_colour_distance=self.max_colour_distance + colour)


def _prefix(view: str) -> str:
    return "" if view == "whole" else f"{view}_"


def view_columns(view: str) -> tuple[str, str, str]:
    p = _prefix(view)
    return f"{p}phash", f"{p}dhash", f"{p}colour"


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of (k, SIGNATURE_BYTES) uint8 signatures, in 0..1: how much of the hue weight
    sits elsewhere (total variation of the hue histograms), or 1 when one picture carries
    under half the other's chroma (a red and a black version of a design). Two pictures with
    hardly any colour have no hue to compare: 0, and the hashes decide."""
    chroma_a, chroma_b = a[:, 0].astype(np.float32), b[:, 0].astype(np.float32)
    hues_a = a[:, 1:].astype(np.float32) / np.maximum(a[:, 1:].sum(axis=1, keepdims=True), 1)
    hues_b = b[:, 1:].astype(np.float32) / np.maximum(b[:, 1:].sum(axis=1, keepdims=True), 1)
    spread = 0.5 * np.abs(hues_a - hues_b).sum(axis=1)
    greyish = np.maximum(chroma_a, chroma_b) < MIN_MEAN_CHROMA
    unequal = np.minimum(chroma_a, chroma_b) < MIN_CHROMA_RATIO * np.maximum(chroma_a, chroma_b)
    return np.where(greyish, 0.0, np.where(unequal, 1.0, spread))


def _signatures(column: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(n, SIGNATURE_BYTES) uint8 signatures and whether each row has one."""
    known = column.is_not_null().to_numpy()
    out = np.zeros((column.len(), SIGNATURE_BYTES), np.uint8)
    values = column.drop_nulls().to_list()
    if values:
        out[known] = np.frombuffer(b"".join(values), np.uint8).reshape(-1, SIGNATURE_BYTES)
    return out, known


def _view_pairs(frame: pl.DataFrame, view: str, rule: DedupeRule) -> np.ndarray:
    """(k, 2) row pairs of `frame` whose `view` passes its hash limits and the colour look."""
    limits = rule.views[view]
    p_col, d_col, c_col = view_columns(view)
    hashed = frame[p_col].is_not_null() & frame[d_col].is_not_null()
    rows = np.flatnonzero(hashed.to_numpy())
    if rows.size < 2:
        return np.empty((0, 2), np.int64)
    # Filtered before to_numpy: a column with nulls would come back as float64, which cannot
    # hold 64-bit hashes exactly.
    phash = frame[p_col].filter(hashed).to_numpy().astype(np.uint64)
    dhash = frame[d_col].filter(hashed).to_numpy().astype(np.uint64)
    pairs, _ = near_duplicate_pairs(phash, limits.max_phash)
    pairs = pairs[popcount64(dhash[pairs[:, 0]] ^ dhash[pairs[:, 1]]) <= limits.max_dhash]
    pairs = rows[pairs]
    if rule.merge_colour_variants or pairs.size == 0:
        return pairs
    colours, known = _signatures(frame[c_col])
    a, b = pairs[:, 0], pairs[:, 1]
    # An image hashed before colour signatures existed has none: only the hashes can speak.
    agree = ~(known[a] & known[b]) | (
        colour_distance(colours[a], colours[b]) <= rule.max_colour_distance
    )
    return pairs[agree]


def with_hash_columns(hashes: pl.DataFrame) -> pl.DataFrame:
    """The hashes with every image_hashes column, null where a table (or a test) lacks it."""
    return hashes.with_columns(
        pl.lit(None, dtype).alias(name)
        for name, dtype in IMAGE_HASHES_SCHEMA.items()
        if name not in hashes.columns
    )


def confirmed_pairs(hashes: pl.DataFrame, rule: DedupeRule) -> np.ndarray:
    """(k, 2) distinct row pairs (i < j) of `hashes` that the rule calls the same photo."""
    hashes = with_hash_columns(hashes)
    found = [_view_pairs(hashes, view, rule) for view in VIEWS if view in rule.views]
    found = [np.sort(p, axis=1) for p in found if p.size]
    if not found:
        return np.empty((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


# Limits chosen on the labelled set in tests/curation/test_dedupe.py (54 sources: unrelated
# products, re-shoots in another colour, halves of one wide photo, 6 colourways, 8 distinct
# products on white at one framing; each with 8 edits: 486 images). The test prints the sweep.
# - whole 10/12: chosen before the views existed (re-encodes, resizes and brightness stay within
#   phash 4; crops reach 10-20; phash 12 lets same-layout look-alikes in). Kept, so today's
#   matches stay matches.
# - box 8/10: a content box moves by a pixel between copies, so its hashes are noisier than the
#   whole picture's (median 2-4 bits, a few re-encodes far more where the trim stops on a soft
#   shadow). 6/8 misses letterboxed copies (padding 50/54); 10/12 scores like 8/10 here but let
#   two same-colour strangers of like silhouette in while tuning, so 8/10 keeps that margin.
# - centre 10/12: a badge leaves the centre within 4 bits; crops move it most (median 10).
# - colour 0.25: same-photo pairs that match on a view's hashes differ by up to ~0.3 of hue
#   weight on that view (JPEG chroma subsampling over fine stripes), colourways by 0.65 or more,
#   and a tan and an olive product (30 degrees of hue apart) by 0.30: 0.25 keeps such pairs
#   apart with a margin, and another view still confirms most copies it rejects (0.15 loses
#   more: jpeg60 and brighter 53/54).
DEFAULT_MAX_PHASH_DISTANCE = 10
DEFAULT_MAX_DHASH_DISTANCE = 12
DEFAULT_MAX_COLOUR_DISTANCE = 0.25

DEFAULT_RULE = DedupeRule(
    views={
        "whole": ViewLimits(DEFAULT_MAX_PHASH_DISTANCE, DEFAULT_MAX_DHASH_DISTANCE),
        "box": ViewLimits(8, 10),
        "centre": ViewLimits(10, 12),
    },
    max_colour_distance=DEFAULT_MAX_COLOUR_DISTANCE,
)
