"""Hamming-distance search over 64-bit hashes: every pair within d bits, exactly, fast.

Multi-index hashing: split the bits into bands; two hashes within d bits agree on some set of
untouched bands, so sorting by the keys of a covering set of band tables and verifying the
neighbours finds every pair, without the n^2/2 comparisons of brute force (bench/
near_duplicates.py measures both). Dedupe (`curation.dedupe_confirm`) runs one search per view.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import combinations

import numpy as np

# Pair lists inside one run of equal keys are built in slices of this many pairs, bounding
# peak memory (each pair costs ~40 bytes across the temporaries) whatever the run sizes are.
PAIR_CHUNK = 1 << 22

# Cost of one hash in one table (band key, pack, sort, gather) and of verifying one candidate
# pair, in ns, measured on 1M random hashes on 2 cores; only used to choose the band layout.
_TABLE_NS_PER_HASH = 40.0
_VERIFY_NS_PER_PAIR = 40.0

# Greedy band covers (see `_band_cover`) are only built for layouts with at most this many
# (untouched-band set, table) incidences, which keeps each build under ~0.2 s, and only for
# inputs this large: below it the complete layouts already finish in well under a second.
_COVER_MAX_INCIDENCES = 3_000_000
_COVER_MIN_HASHES = 50_000
# Layouts needing more tables than this are never worth it (and slow to build).
_MAX_TABLES = 5000

# Tables are independent and numpy releases the GIL in sort, take and ufunc loops, so they run
# on threads; more than the cores would only add memory (each table holds ~5 arrays of n).
_TABLE_THREADS = max(1, min(4, os.cpu_count() or 1))

_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
_POPCOUNT_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (the Hamming distance when x is an XOR of two hashes)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(x).astype(np.int64)
    return _POPCOUNT_LUT[x.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int64)


def _band_widths(m: int) -> list[int]:
    """Widths of m bands over 64 bits; they differ by at most one bit."""
    return [64 // m + (1 if k < 64 % m else 0) for k in range(m)]


def _subset_masks(m: int, k: int) -> np.ndarray:
    return np.array([sum(1 << i for i in c) for c in combinations(range(m), k)], np.int64)


def _greedy_cover(m: int, untouched: int, r: int) -> tuple[int, ...]:
    """Greedy set cover: r-subsets of m bands until every `untouched`-subset contains one.

    Each step takes the r-subset inside the most still-uncovered sets (ties: the first), so
    the result is deterministic. Typically 2-3x smaller than all C(m, r) subsets would be.
    """
    sets = _subset_masks(m, untouched)
    tables = _subset_masks(m, r)
    table_of = np.full(1 << m, -1, np.int64)
    table_of[tables] = np.arange(tables.size)
    bit_rows = (sets[:, None] >> np.arange(m)) & 1
    members = np.nonzero(bit_rows)[1].reshape(sets.size, untouched)  # each set's bands
    patterns = np.array(list(combinations(range(untouched), r)), np.int64)
    inside = np.full(tables.size, math.comb(m - r, untouched - r), np.int64)
    is_open = np.ones(sets.size, bool)
    chosen: list[int] = []
    while is_open.any():
        best = int(tables[int(np.argmax(inside))])
        chosen.append(best)
        hit = np.flatnonzero(is_open & ((sets & best) == best))
        is_open[hit] = False
        subsets = (np.int64(1) << members[hit][:, patterns]).sum(axis=2).ravel()
        inside -= np.bincount(table_of[subsets], minlength=tables.size)
    return tuple(chosen)


@lru_cache(maxsize=64)
def _band_cover(m: int, max_distance: int, r: int) -> tuple[int, ...]:
    """Tables (bitmasks of r of the m bands) such that every m - d bands contain one table.

    Two hashes within distance d differ in at most d bands, so their m - d or more untouched
    bands contain some table's bands: the pair agrees on that table's key, which makes the
    search exact. With r = m - d that needs all C(m, r) subsets (pigeonhole multi-index
    hashing); with r < m - d a greedy cover needs far fewer than C(m, r) tables of that width.
    """
    if r == m - max_distance:
        return tuple(int(x) for x in _subset_masks(m, r))
    return _greedy_cover(m, m - max_distance, r)


def _layout_cost(n: int, m: int, tables: Sequence[int]) -> float:
    """Estimated ns for the table passes plus verifying the random pairs each table yields."""
    widths = np.array(_band_widths(m), dtype=np.float64)
    masks = np.array(tables, dtype=np.int64)
    key_bits = (((masks[:, None] >> np.arange(m)) & 1) * widths).sum(axis=1)
    random_pairs = n * (n - 1) / 2.0 / np.exp2(key_bits)
    return float((n * _TABLE_NS_PER_HASH + random_pairs * _VERIFY_NS_PER_PAIR).sum())


def _cover_lower_bound(m: int, max_distance: int, r: int) -> int:
    """Schoenheim bound on the tables any cover of m bands by r-band tables needs.

    In complement form a cover is a covering design: (m - r)-band blocks covering every
    d-band set; the bound is ceil(m/(m-r) * ceil((m-1)/(m-r-1) * ... )) over d levels.
    """
    bound = 1
    for level in range(max_distance - 1, -1, -1):
        bound = -(-(m - level) * bound // (m - r - level))
    return bound


def _greedy_layouts(n: int, max_distance: int) -> list[tuple[float, int, int]]:
    """(lower bound on the cost, m, r) of each greedy layout small enough to build."""
    out = []
    for m in range(max_distance + 2, 65):
        untouched = m - max_distance
        if math.comb(m, untouched) * untouched > _COVER_MAX_INCIDENCES:
            break
        for r in range(1, untouched):
            tables = _cover_lower_bound(m, max_distance, r)
            if math.comb(m, untouched) * math.comb(untouched, r) > _COVER_MAX_INCIDENCES:
                continue
            if tables <= _MAX_TABLES:
                cheapest = _layout_cost(n, m, [(1 << r) - 1])  # the r widest bands
                out.append((tables * cheapest, m, r))
    return sorted(out)


def _band_layout(n: int, max_distance: int) -> tuple[int, tuple[int, ...]]:
    """(bands m, tables) with the lowest estimated cost for n hashes at this distance.

    More bands give longer keys (fewer random candidates per table) but more tables; the best
    trade-off depends on n and d, so each layout is costed: every complete one, then, for
    large inputs, greedy covers in order of their lower-bound cost, built only while that
    bound could still beat the best so far.
    """
    best: tuple[float, int, tuple[int, ...]] | None = None
    for m in range(max_distance + 1, 65):
        if math.comb(m, m - max_distance) > _MAX_TABLES:
            break
        tables = _band_cover(m, max_distance, m - max_distance)
        cost = _layout_cost(n, m, tables)
        if best is None or cost < best[0]:
            best = (cost, m, tables)
    assert best is not None
    for bound, m, r in _greedy_layouts(n, max_distance) if n >= _COVER_MIN_HASHES else []:
        if bound >= best[0]:
            break
        tables = _band_cover(m, max_distance, r)
        cost = _layout_cost(n, m, tables)
        if cost < best[0]:
            best = (cost, m, tables)
    return best[1], best[2]


def _bands(hashes: np.ndarray, m: int) -> tuple[np.ndarray, list[int]]:
    """(m, n) band values (uint32: a band is at most 32 bits) and each band's width."""
    widths = _band_widths(m)
    out = np.empty((m, hashes.size), dtype=np.uint32)
    shift = 0
    for k, w in enumerate(widths):
        out[k] = (hashes >> np.uint64(shift)) & np.uint64((1 << w) - 1)
        shift += w
    return out, widths


def _pairs_within_runs(
    order: np.ndarray, run_starts: np.ndarray, run_sizes: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair (order[a], order[b]), a < b, inside each run of `order`; yielded in slices.

    Runs of two (the bulk, for well-chosen keys) give their one pair directly. In longer runs
    the element at position p of a run of size s pairs with the s - 1 - p elements after it,
    so the pair list is built with repeat/cumsum instead of a Python loop over runs.
    """
    twos = run_starts[run_sizes == 2]
    if twos.size:
        yield order[twos], order[twos + 1]
    keep = run_sizes > 2
    run_starts, run_sizes = run_starts[keep], run_sizes[keep]
    if run_sizes.size == 0:
        return
    pos = np.repeat(run_starts, run_sizes) + _ranges(run_sizes)
    partners = np.repeat(run_starts + run_sizes, run_sizes) - pos - 1
    ends = np.cumsum(partners)
    lo = 0
    while lo < pos.size:
        hi = int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + PAIR_CHUNK, "right"))
        hi = max(hi, lo + 1)
        counts = partners[lo:hi]
        left = np.repeat(pos[lo:hi], counts)
        right = left + 1 + _ranges(counts)
        yield order[left], order[right]
        lo = hi


def _ranges(sizes: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s) for each s in sizes."""
    total = int(sizes.sum())
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.arange(total, dtype=np.int64) - starts


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal values in a sorted array."""
    if sorted_keys.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    sizes = np.diff(np.concatenate((starts, [sorted_keys.size])))
    return starts, sizes


def _sorted_by_key(bands: np.ndarray, widths: list[int], table: int) -> tuple[np.ndarray, ...]:
    """(order, sorted keys): hash indices sorted by the table's key (its bands, concatenated)."""
    picked = [k for k in range(len(widths)) if table >> k & 1]
    key_bits = sum(widths[k] for k in picked)
    dtype = np.uint32 if key_bits <= 32 else np.uint64  # half the memory traffic when it fits
    key = bands[picked[0]].astype(dtype)
    for k in picked[1:]:
        key = (key << dtype(widths[k])) | bands[k]
    n = bands.shape[1]
    idx_bits = max(1, int(n - 1).bit_length())
    if key_bits + idx_bits > 64:
        order = np.argsort(key, kind="stable")
        return order, key[order]
    # Pack the index under the key and sort plain integers: several times faster than
    # argsort, and equivalent to a stable sort because indices are unique.
    packed = (key.astype(np.uint64) << np.uint64(idx_bits)) | np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << idx_bits) - 1)).view(np.int64)
    return order, packed >> np.uint64(idx_bits)


def _within(xor: np.ndarray, max_distance: int) -> np.ndarray:
    """popcount(xor) <= max_distance, without widening the counts to int64 on numpy >= 2."""
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(xor) <= max_distance
    return popcount64(xor) <= max_distance


def _table_pairs(
    uniq: np.ndarray, bands: np.ndarray, widths: list[int], table: int, max_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b) within max_distance among hashes that agree on the table's key.

    With hashes laid out in key order, the pairs of a run are the positions p, p + k for
    k < run length; each offset k is one vector over the positions whose run still reaches
    p + k, so the work follows the candidate count and memory stays linear (no list of
    candidate pairs). A hit is verified, so offset 1 is checked for every neighbour without
    looking at keys: a close pair across two runs is still a true pair.
    """
    order, keys = _sorted_by_key(bands, widths, table)
    ordered = uniq[order]
    hit = np.flatnonzero(_within(ordered[1:] ^ ordered[:-1], max_distance))
    found_a, found_b = [hit], [hit + 1]
    pos = np.flatnonzero(keys[2:] == keys[:-2])
    k = 2
    while pos.size:
        hit = pos[_within(ordered[pos] ^ ordered[pos + k], max_distance)]
        found_a.append(hit)
        found_b.append(hit + k)
        k += 1
        pos = pos[pos < keys.size - k]
        pos = pos[keys[pos + k] == keys[pos]]
    a, b = order[np.concatenate(found_a)], order[np.concatenate(found_b)]
    return np.minimum(a, b), np.maximum(a, b)


def _distinct_pairs(uniq: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of distinct hashes within max_distance, via multi-index hashing."""
    found: list[tuple[np.ndarray, np.ndarray]] = []
    if uniq.size >= 2 and max_distance >= 1:
        m, tables = _band_layout(uniq.size, min(max_distance, 63))
        bands, widths = _bands(uniq, m)

        def one(table: int) -> tuple[np.ndarray, np.ndarray]:
            return _table_pairs(uniq, bands, widths, table, max_distance)

        if len(tables) > 1 and uniq.size >= _COVER_MIN_HASHES and _TABLE_THREADS > 1:
            with ThreadPoolExecutor(_TABLE_THREADS, thread_name_prefix="near-dup") as pool:
                found = list(pool.map(one, tables))
        else:
            found = [one(t) for t in tables]
    if not found:
        return np.empty((0, 2), np.int64), np.empty(0, np.int64)
    # A pair agreeing on several tables' keys is found once per table.
    i = np.concatenate([a for a, _ in found])
    j = np.concatenate([b for _, b in found])
    pairs = np.unique(np.stack([i, j], 1), axis=0)
    return pairs, popcount64(uniq[pairs[:, 0]] ^ uniq[pairs[:, 1]])


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i < j) whose 64-bit hashes differ in at most max_distance bits.

    Returns (pairs of shape (k, 2) int64, sorted lexicographically; distances of shape (k,)).
    Identical hashes are collapsed first so that a hash repeated 10k times (a placeholder image)
    costs one bucket entry, not 10k; note the result itself still lists its s(s-1)/2 pairs.
    """
    hashes = np.asarray(hashes, dtype=np.uint64).ravel()
    uniq, inverse = np.unique(hashes, return_inverse=True)
    upairs, udist = _distinct_pairs(uniq, max_distance)
    members = np.argsort(inverse, kind="stable")
    starts, sizes = _runs(inverse[members])
    parts_i = [np.empty(0, np.int64)]
    parts_j = [np.empty(0, np.int64)]
    parts_d = [np.empty(0, np.int64)]
    for a, b in _pairs_within_runs(members, starts, sizes):  # identical hashes: distance 0
        parts_i.append(a)
        parts_j.append(b)
        parts_d.append(np.zeros(a.size, np.int64))
    if upairs.size:
        # Every member of group u pairs with every member of group v.
        cu, cv = sizes[upairs[:, 0]], sizes[upairs[:, 1]]
        reps = cu * cv
        k = _ranges(reps)
        cv_rep = np.repeat(cv, reps)
        a = members[np.repeat(starts[upairs[:, 0]], reps) + k // cv_rep]
        b = members[np.repeat(starts[upairs[:, 1]], reps) + k % cv_rep]
        parts_i.append(a)
        parts_j.append(b)
        parts_d.append(np.repeat(udist, reps))
    i, j, d = np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_d)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((hi, lo))
    return np.stack([lo[order], hi[order]], 1).astype(np.int64), d[order]
