"""Static-shape batches for XLA: length buckets, seeded shuffling, per-host shards.

Every batch this module yields has the shape ``[batch_size // process_count, L]`` with ``L``
one of a few bucket lengths, so a jitted step compiles at most ``len(buckets)`` times. An
epoch's order depends only on ``(seed, epoch)``: rows are shuffled, sorted by length inside
chunks of ``sort_chunk`` batches (so a batch holds rows of similar length), cut into global
batches and the batches shuffled. Each batch is padded to the smallest bucket that holds its
longest row; every host pads to the same ``L`` and keeps its contiguous slice of the rows.

With ``pack=True`` (sequence classification) several examples share a row instead: rows of
one width hold segments (see :mod:`jaxprune.data.packing`), and per-example arrays gain a
segment axis ``S``, so an epoch has a single batch shape and little padding.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import datasets
import numpy as np
import pyarrow as pa

from jaxprune.data import packing

#: The columns a batch holds by default (those of them the dataset has).
MODEL_COLUMNS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "start_positions",
    "end_positions",
)


@dataclasses.dataclass(frozen=True)
class _Ragged:
    """Rows of different lengths: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray  # [n + 1], from 0

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """What an epoch produces: batch count, ``{(rows, length): count}`` (``(rows, length,
    segments)`` when packing) and padding share."""

    num_batches: int
    shapes: dict[tuple[int, ...], int]
    padding: float  # padded positions / all positions of the length axis, global batches


def _narrow(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return a.astype(np.int32)
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype.kind == "b":
        return a
    raise TypeError(f"column of dtype {a.dtype} cannot be batched (numbers only)")


def _column(data: Any, name: str) -> _Ragged | np.ndarray:
    """One column as a ragged int/float array or a 1-D array, from Arrow or Python lists."""
    if isinstance(data, pa.ChunkedArray | pa.Array):
        arr = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
        if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            if not (
                pa.types.is_integer(arr.type.value_type)
                or pa.types.is_floating(arr.type.value_type)
            ):
                raise TypeError(f"column {name!r} holds {arr.type}, not a list of numbers")
            offsets = np.asarray(arr.offsets, dtype=np.int64)
            return _Ragged(_narrow(arr.flatten().to_numpy()), offsets - offsets[0])
        return _narrow(arr.to_numpy(zero_copy_only=False))
    rows = list(data)
    if rows and isinstance(rows[0], list | tuple | np.ndarray):
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        flat = np.concatenate([np.asarray(r).ravel() for r in rows]) if rows else np.zeros(0)
        if flat.size != lengths.sum():
            raise TypeError(f"column {name!r} is not a list of 1-D sequences")
        return _Ragged(_narrow(flat), np.concatenate([[0], np.cumsum(lengths)]))
    return _narrow(np.asarray(rows))


def _tokens(
    col: _Ragged, example: np.ndarray, position: np.ndarray, keep: np.ndarray, pad: Any
) -> np.ndarray:
    """Token ``position`` of row ``example`` of ``col`` where ``keep``, else ``pad``; the
    three index arrays broadcast to the output shape."""
    take = np.minimum(col.offsets[example] + position, max(len(col.values) - 1, 0))
    values = col.values[take] if len(col.values) else np.zeros(take.shape, col.values.dtype)
    return np.where(keep, values, np.asarray(pad, dtype=col.values.dtype))


def choose_buckets(
    lengths: Sequence[int] | np.ndarray, max_buckets: int = 4, multiple: int = 8
) -> tuple[int, ...]:
    """Bucket lengths, multiples of ``multiple``, that minimise ``sum_i bucket(lengths[i])``.

    ``bucket(l)`` is the smallest bucket ``>= l``; the largest bucket covers ``max(lengths)``.
    Exact dynamic programme over the rounded-up observed lengths (only those can be optimal
    boundaries). Pass per-example lengths, or (what :class:`Batcher` does) the longest row of
    each batch, whose bucket sets that batch's width. Ties go to fewer buckets.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        raise ValueError("no lengths to choose buckets from")
    cands = np.unique(-(-np.maximum(lengths, 1) // multiple) * multiple)
    cum = np.concatenate(
        [[0], np.cumsum(np.bincount(np.searchsorted(cands, lengths), minlength=len(cands)))]
    )
    m = len(cands)
    # cost[b][j]: least sum with b + 1 buckets, the largest being cands[j] (covering 0..j).
    cost = [(cands * cum[1:]).astype(np.float64)]
    back: list[np.ndarray] = []
    for _ in range(min(max_buckets, m) - 1):
        # prev bucket cands[i], new bucket cands[j] covers candidates i+1..j: i < j.
        total = cost[-1][:, None] + cands[None, :] * (cum[None, 1:] - cum[1:, None])
        total[np.tril_indices(m)] = np.inf
        back.append(np.argmin(total, axis=0))
        cost.append(total[back[-1], np.arange(m)])
    final = [c[m - 1] for c in cost]
    b = int(np.argmin(final))  # first minimum: fewest buckets
    out, j = [int(cands[m - 1])], m - 1
    for level in range(b, 0, -1):
        j = int(back[level - 1][j])
        out.append(int(cands[j]))
    return tuple(sorted(out))


class Batcher:
    """Epochs of static-shape batches of a tokenised dataset (see module doc).

    Args:
      features: a ``datasets.Dataset`` or a mapping of columns (lists, or lists of lists).
      batch_size: global batch size (all hosts together).
      buckets: allowed lengths of the sequence axis; default: :func:`choose_buckets` on the
        longest row of each batch of epoch 0 (``max_buckets`` of them, multiples of
        ``multiple``), so the same on every host.
      seed, shuffle: the order of epoch ``e`` is a function of ``(seed, e)`` only; without
        shuffle rows are sorted by length over the whole set (eval: least padding).
      drop_last: drop the rows that do not fill a last global batch (chosen at random each
        epoch when shuffling); otherwise that batch is filled with padding rows
        (``valid`` False, ``index`` -1) so every batch has the same number of rows.
      process_index, process_count: this host yields rows
        ``[process_index * b, (process_index + 1) * b)`` of every global batch,
        ``b = batch_size // process_count`` (``rows // process_count`` when packing).
      columns: the columns to batch; default those of :data:`MODEL_COLUMNS` present.
      pad_id: padding of ``input_ids``; ``labels`` pad with -100, everything else with 0.
      padding_side: "right", or "left" (prompts for generation end at the last position).
      sort_chunk: the length sort runs inside chunks of this many batches (bigger: less
        padding, less randomness in a batch's company).
      length_column: the column whose row lengths set the batch width.
      pack: pack examples into rows of ``pack_length`` tokens (best fit decreasing over the
        whole set, once; each epoch shuffles which examples of equal length share a row, and
        the rows). A global batch is then ``rows`` rows, ``rows`` (a multiple of
        ``process_count``) chosen so that a batch holds ``batch_size`` examples on average
        and an epoch has about as many batches as without packing; rows are grouped so that
        every batch holds about that many (each example weighs about the same in the mean
        loss of its batch); ``drop_last`` drops the rows that do not fill a last batch.
        For sequence classification: per-token labels and answer positions are refused.
      pack_length: the row width ``L``; default the longest row rounded up to ``multiple``.
      max_segments: at most this many examples in a row (``S``); default the most that
        packing puts in a row with no limit.

    Each yielded batch maps every column to an array ``[b, L]`` (sequences) or ``[b]``
    (per-row values like a class label), plus ``index`` (int32 ``[b]``: the row of
    ``features``, -1 for padding rows) and ``valid`` (bool ``[b]``). Packed batches hold
    ``b = rows // process_count`` rows; per-example columns, ``index`` and ``valid`` are
    ``[b, S]`` (-100 / -1 / False in empty slots), and they add ``segment_ids`` (int32
    ``[b, L]``: 0 on padding, ``k + 1`` on the tokens of the row's ``k``-th example),
    ``position_ids`` (int32 ``[b, L]``, restarting at 0 in every segment) and
    ``cls_positions`` (int32 ``[b, S]``: where each example starts, 0 in empty slots).
    """

    def __init__(
        self,
        features: datasets.Dataset | Mapping[str, Sequence[Any]],
        batch_size: int,
        *,
        buckets: Sequence[int] | None = None,
        max_buckets: int = 4,
        multiple: int = 8,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        process_index: int = 0,
        process_count: int = 1,
        columns: Sequence[str] | None = None,
        pad_id: int = 0,
        padding_side: Literal["right", "left"] = "right",
        sort_chunk: int = 64,
        length_column: str = "input_ids",
        pack: bool = False,
        pack_length: int | None = None,
        max_segments: int | None = None,
    ) -> None:
        if batch_size % process_count:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by process_count {process_count}"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if isinstance(features, datasets.Dataset):
            table = features.with_format("arrow")[:]  # applies any select/shuffle indices
            names, get = table.column_names, table.column
        else:
            names, get = list(features), features.__getitem__
        columns = list(columns) if columns is not None else [c for c in MODEL_COLUMNS if c in names]
        if length_column not in columns:
            raise ValueError(f"length column {length_column!r} not among {columns}")
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"columns {missing} not in the features ({names})")
        self.columns = {c: _column(get(c), c) for c in columns}
        lengths = self.columns[length_column]
        if not isinstance(lengths, _Ragged):
            raise TypeError(f"length column {length_column!r} holds no sequences")
        self.lengths = lengths.lengths
        for c, col in self.columns.items():
            if isinstance(col, _Ragged) and not np.array_equal(col.lengths, self.lengths):
                raise ValueError(f"rows of {c!r} and {length_column!r} differ in length")
        self.num_rows = len(self.lengths)
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.process_index = process_index
        self.process_count = process_count
        self.pad = {"input_ids": pad_id, "labels": -100}
        self.padding_side = padding_side
        self.sort_chunk = sort_chunk
        self.pack = pack
        self.rows = batch_size  # rows of a global batch
        if pack:
            buckets = [self._init_packing(buckets, pack_length, max_segments, multiple)]
        elif pack_length is not None or max_segments is not None:
            raise ValueError("pack_length and max_segments apply only with pack=True")
        if buckets is None:
            widths = [self.lengths[g[g >= 0]].max() for g in self.plan(0)]
            buckets = choose_buckets(widths, max_buckets, multiple)
        self.buckets = np.array(sorted(buckets), dtype=np.int64)
        if self.lengths.max(initial=0) > self.buckets[-1]:
            raise ValueError(
                f"a row has {self.lengths.max()} tokens, more than the largest bucket "
                f"{self.buckets[-1]}"
            )

    def _init_packing(
        self, buckets: Sequence[int] | None, width: int | None, segments: int | None, multiple: int
    ) -> int:
        """Checks the packing options, lays out the rows; returns the row width."""
        if buckets is not None:
            raise ValueError("pack=True sets the row width with pack_length, not buckets")
        if self.padding_side != "right":
            raise ValueError("packing pads on the right only")
        refused = [
            c
            for c, col in self.columns.items()
            if c in ("start_positions", "end_positions")
            or (c == "labels" and isinstance(col, _Ragged))
        ]
        if refused:
            raise ValueError(
                f"packing is for sequence classification; columns {refused} hold token "
                "positions or per-token labels (batch token tasks with buckets)"
            )
        if self.num_rows and self.lengths.min() < 1:
            raise ValueError(f"row {int(np.argmin(self.lengths))} is empty: nothing to pack")
        longest = int(self.lengths.max(initial=1))
        width = width or -(-longest // multiple) * multiple
        if longest > width:
            raise ValueError(f"a row has {longest} tokens, more than pack_length {width}")
        self.slots = packing.best_fit_decreasing(self.lengths, width, segments)
        share = self.batch_size * len(self.slots) / max(self.num_rows, 1)
        self.rows = self.process_count * max(1, round(share / self.process_count))
        return width

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.slots) if self.pack else self.num_rows
        return n // self.rows if self.drop_last else -(-n // self.rows)

    def plan(self, epoch: int) -> np.ndarray:
        """Row indices of every global batch of ``epoch``: int64 ``[len(self), rows]``, or
        ``[len(self), rows, S]`` when packing; -1 for padding rows and empty slots.
        Identical on every host."""
        if self.pack:
            return self._pack_plan(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        n, b = self.num_rows, self.batch_size
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.drop_last:
            order = order[: n - n % b]
        chunk = b * self.sort_chunk if self.shuffle else max(len(order), 1)
        # Longest first inside each chunk, so the padded last batch gets the shortest rows.
        pieces = np.split(order, range(chunk, len(order), chunk))
        order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in pieces])
        order = np.concatenate([order, np.full((-len(order)) % b, -1)]).reshape(-1, b)
        return order[rng.permutation(len(order))] if self.shuffle else order

    def _pack_plan(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_rows) if self.shuffle else np.arange(self.num_rows)
        index = packing.fill_slots(self.slots, self.lengths, order)
        if self.shuffle:
            index = index[rng.permutation(len(index))]
        keep = len(self) * self.rows
        index = np.concatenate([index, np.full((keep, index.shape[1]), -1)])[:keep]
        plan = index[packing.balance((index >= 0).sum(1), self.rows)]
        return plan[rng.permutation(len(plan))] if self.shuffle else plan

    def width(self, rows: np.ndarray) -> int:
        """The bucket of a global batch: the smallest that holds its longest row."""
        longest = self.lengths[rows[rows >= 0]].max(initial=0)
        return int(self.buckets[np.searchsorted(self.buckets, longest)])

    def __call__(self, epoch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """This host's share of every batch of ``epoch`` (see class doc)."""
        b = self.rows // self.process_count
        fill = self._pack_rows if self.pack else self._pad
        for rows in self.plan(epoch):
            width = self.width(rows)
            local = rows[self.process_index * b : (self.process_index + 1) * b]
            yield fill(local, width)

    def _pad(self, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        out: dict[str, np.ndarray] = {}
        for name, col in self.columns.items():
            pad = self.pad.get(name, 0)
            if isinstance(col, _Ragged):
                lengths = np.where(valid, col.lengths[safe], 0)[:, None]
                pos = np.arange(width)[None, :]
                if self.padding_side == "left":
                    pos = pos - (width - lengths)
                keep = (pos >= 0) & (pos < lengths)
                out[name] = _tokens(col, safe[:, None], np.clip(pos, 0, None), keep, pad)
            else:
                out[name] = np.where(valid, col[safe], np.asarray(pad, dtype=col.dtype))
        out["index"] = rows.astype(np.int32)
        out["valid"] = valid
        return out

    def _pack_rows(self, index: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """The packed batch of example ``index`` ``[b, S]`` (-1: empty slot)."""
        valid = index >= 0
        safe = np.where(valid, index, 0)
        seg = packing.segments(np.where(valid, self.lengths[safe], 0), width)
        example = np.take_along_axis(safe, seg.slot, axis=1)  # [b, L]
        out: dict[str, np.ndarray] = {}
        for name, col in self.columns.items():
            pad = self.pad.get(name, 0)
            if isinstance(col, _Ragged):
                out[name] = _tokens(col, example, seg.position_ids, seg.segment_ids > 0, pad)
            else:
                out[name] = np.where(valid, col[safe], np.asarray(pad, dtype=col.dtype))
        out["segment_ids"] = seg.segment_ids
        out["position_ids"] = seg.position_ids
        out["cls_positions"] = seg.cls_positions
        out["index"] = index.astype(np.int32)
        out["valid"] = valid
        return out

    def stats(self, epoch: int = 0) -> BatchStats:
        """Shapes and padding of ``epoch`` without building the arrays."""
        b = self.rows // self.process_count
        plan = self.plan(epoch)
        widths = [self.width(rows) for rows in plan]
        real = int(self.lengths[plan[plan >= 0]].sum())
        total = self.rows * sum(widths)
        segments = plan.shape[2:]  # (S,) when packing
        shapes = Counter((b, w, *segments) for w in widths)
        return BatchStats(
            len(widths), dict(sorted(shapes.items())), 1 - real / total if total else 0.0
        )


def batches(
    features: datasets.Dataset | Mapping[str, Sequence[Any]],
    batch_size: int,
    *,
    epoch: int = 0,
    **kwargs: Any,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of :class:`Batcher` ``(features, batch_size, **kwargs)``. For many epochs
    build the Batcher once: it reads the columns and picks the buckets at construction."""
    return Batcher(features, batch_size, **kwargs)(epoch)


def unbatch(
    num_rows: int,
    batch_list: Iterable[Mapping[str, np.ndarray]],
    outputs: Iterable[np.ndarray],
    fill: float = 0.0,
) -> np.ndarray:
    """Per-batch model outputs back in dataset order.

    ``outputs[k]`` (``[b, ...]``, e.g. logits ``[b, L]``) belongs to ``batch_list[k]``; row
    ``j`` lands at ``batch_list[k]["index"][j]`` unless it is a padding row. Packed batches
    (``index`` ``[b, S]``, outputs ``[b, S, ...]``) work the same per slot. A length axis is
    padded with ``fill`` to the widest batch. Returns ``[num_rows, ...]``; rows no batch
    covered (``drop_last``, another host's share) stay ``fill``.
    """
    pairs = [
        (np.asarray(b["index"]), np.asarray(o)) for b, o in zip(batch_list, outputs, strict=True)
    ]
    if not pairs:
        raise ValueError("no batches")
    lead = pairs[0][0].ndim  # 1, or 2 for packed batches
    tail = tuple(max(o.shape[k] for _, o in pairs) for k in range(lead, pairs[0][1].ndim))
    result = np.full((num_rows, *tail), fill, dtype=pairs[0][1].dtype)
    for index, out in pairs:
        keep = index >= 0
        region: tuple[Any, ...] = (index[keep], *(slice(0, s) for s in out.shape[lead:]))
        result[region] = out[keep]
    return result


__all__ = [
    "MODEL_COLUMNS",
    "BatchStats",
    "Batcher",
    "batches",
    "choose_buckets",
    "unbatch",
]
