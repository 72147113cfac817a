"""Sequence packing: several short examples share one row, each its own segment.

:func:`best_fit_decreasing` lays the examples' lengths out in rows of a fixed width once
(the layout depends on the multiset of lengths only); :func:`fill_slots` puts examples into
that layout for one epoch; :func:`balance` groups rows into batches of about equal numbers of
examples; :func:`segments` describes a packed row for the model: which segment every
position belongs to, its position inside the segment, and where each segment starts. A
model that attends only within a segment and restarts positions at every segment computes
for each example exactly what it computes for the example alone.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np


def best_fit_decreasing(
    lengths: np.ndarray, width: int, max_segments: int | None = None
) -> np.ndarray:
    """Slot lengths of packed rows: int64 ``[rows, S]``, 0 for an empty slot.

    Items are placed longest first, each into the open row with the least free space that
    still holds it (a new row when none does). A row holds at most ``width`` tokens and
    ``max_segments`` items (None: no limit); ``S`` is ``max_segments`` or, without a limit,
    the most items any row got. Filled slots of a row come first, longest first.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > width):
        raise ValueError(
            f"item lengths must lie in [1, {width}], got {lengths.min()}..{lengths.max()}"
        )
    if max_segments is not None and max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    by_free: list[list[int]] = [[] for _ in range(width + 1)]  # open rows by free space
    nonempty = 0  # bit f set: by_free[f] holds a row
    rows: list[list[int]] = []
    for item in np.sort(lengths)[::-1].tolist():
        fits = nonempty >> item
        if fits:
            free = item + (fits & -fits).bit_length() - 1  # least free space >= item
            row = by_free[free].pop()
            if not by_free[free]:
                nonempty &= ~(1 << free)
        else:
            free, row = width, len(rows)
            rows.append([])
        rows[row].append(item)
        free -= item
        if free and (max_segments is None or len(rows[row]) < max_segments):
            by_free[free].append(row)
            nonempty |= 1 << free
    slots = max_segments or max((len(r) for r in rows), default=1)
    out = np.zeros((len(rows), slots), np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def fill_slots(slots: np.ndarray, lengths: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Example indices for the slots of a :func:`best_fit_decreasing` layout of ``lengths``.

    Among examples of equal length, those earlier in ``order`` (a permutation of the
    examples) take the earlier slots, so a shuffled ``order`` shuffles which examples share a
    row. Returns int64 ``[rows, S]``, -1 for empty slots.
    """
    order = order[np.argsort(-lengths[order], kind="stable")]
    flat = slots.ravel()
    targets = np.argsort(-flat, kind="stable")[: len(order)]
    if not np.array_equal(flat[targets], lengths[order]):
        raise ValueError("the slot layout was not made from these lengths")
    index = np.full(flat.shape, -1, np.int64)
    index[targets] = order
    return index.reshape(slots.shape)


def balance(counts: np.ndarray, size: int) -> np.ndarray:
    """Rows grouped into batches of ``size`` rows holding nearly equal numbers of examples.

    ``counts`` (int ``[rows]``, ``rows`` a multiple of ``size``) are the examples of each row.
    Rows go, most examples first (ties: earlier rows first), to the batch with the fewest
    examples so far that still has room. Returns int64 ``[rows // size, size]`` row indices.
    """
    if len(counts) % size:
        raise ValueError(f"{len(counts)} rows do not fill batches of {size}")
    groups: list[list[int]] = [[] for _ in range(len(counts) // size)]
    heap = [(0, g) for g in range(len(groups))]
    for row in np.argsort(-np.asarray(counts), kind="stable").tolist():
        total, g = heapq.heappop(heap)
        groups[g].append(row)
        if len(groups[g]) < size:
            heapq.heappush(heap, (total + int(counts[row]), g))
    return np.array(groups, np.int64).reshape(len(groups), size)


class Segments(NamedTuple):
    """Layout of packed rows of width ``L`` holding segments of ``[rows, S]`` lengths."""

    segment_ids: np.ndarray  # int32 [rows, L]: 0 on padding, k + 1 in the k-th segment
    position_ids: np.ndarray  # int32 [rows, L]: position inside the segment, 0 on padding
    cls_positions: np.ndarray  # int32 [rows, S]: first position of each segment, 0 if empty
    slot: np.ndarray  # int64 [rows, L]: the segment of each position (clipped to S - 1)


def segments(seg_lengths: np.ndarray, width: int) -> Segments:
    """Per-position segment bookkeeping for rows whose segments have ``seg_lengths``
    (int ``[rows, S]``, filled slots first, 0 for empty) and are laid out left to right."""
    ends = np.cumsum(seg_lengths, axis=1)
    starts = ends - seg_lengths
    pos = np.arange(width)
    slot = (pos[None, :, None] >= ends[:, None, :]).sum(-1)  # segments ended before pos
    inside = pos[None, :] < ends[:, -1:]
    slot = np.minimum(slot, seg_lengths.shape[1] - 1)
    offset = pos[None, :] - np.take_along_axis(starts, slot, axis=1)
    return Segments(
        segment_ids=np.where(inside, slot + 1, 0).astype(np.int32),
        position_ids=np.where(inside, offset, 0).astype(np.int32),
        cls_positions=np.where(seg_lengths > 0, starts, 0).astype(np.int32),
        slot=slot,
    )


__all__ = [
    "Segments",
    "balance",
    "best_fit_decreasing",
    "fill_slots",
    "segments",
]
