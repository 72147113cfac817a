"""Compressed checkpoints: a pruned parameter tree in one file, a fraction of its dense size.

    report = jaxprune.export.save("model.jpz.safetensors", params)
    print(report)                                  # bytes per leaf, against dense
    params = jaxprune.export.load("model.jpz.safetensors")   # bit-exact

The file is a safetensors file (no pickle) whose metadata holds a JSON header. Every leaf is
stored in the smallest of three encodings, chosen per leaf:

- ``dense``: the array as is.
- ``bitmask``: one bit per entry (``np.packbits``, C order) saying whether it is stored,
  then the stored entries in order: ``ceil(n / 8) + nnz * itemsize`` bytes.
- ``csr``: the array viewed as (rows, last axis); per-row offsets (uint32, or uint64 past
  2**32 entries), one column index per stored entry (uint16 when the last axis has at most
  65,536 entries, else uint32) and the stored entries: smaller than the bitmask below about
  1/16 density.

An entry is stored when its bit pattern is not all zeros, so only ``+0.0`` is implicit and
``-0.0``, NaN payloads and every other value come back bit for bit (``masked_optimizer``
prunes to ``+0.0``). ``values_dtype="float16"`` or ``"bfloat16"`` stores floating values
rounded to that type instead: smaller, no longer exact, and recorded as such in the file.
Every leaf carries a CRC-32 of its stored bytes; :func:`load` names the file and the leaf
whose bytes do not match.

Trees are nested dicts (``nnx.to_pure_dict``'s params) with ``str`` or ``int`` keys; key
types are kept, so the restored tree equals the saved one.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxprune import paths

FORMAT = "jaxprune-compressed"
VERSION = 1
_LOSSY = ("float16", "bfloat16")


class LeafSize(NamedTuple):
    """How one leaf was stored."""

    path: str
    shape: tuple[int, ...]
    encoding: str  # dense | bitmask | csr
    nonzeros: int  # entries stored (bit pattern not all zeros)
    dense_bytes: int  # the leaf as a dense array of its own dtype
    stored_bytes: int  # bytes of its stored tensors (file header not included)


class SizeReport(NamedTuple):
    """What :func:`save` wrote; ``str()`` renders a per-leaf table."""

    rows: tuple[LeafSize, ...]
    file_bytes: int  # size of the file, header included
    values_dtype: str | None  # None: bit-exact

    @property
    def dense_bytes(self) -> int:
        return sum(r.dense_bytes for r in self.rows)

    @property
    def ratio(self) -> float:
        """File size over the dense bytes of every leaf."""
        return self.file_bytes / self.dense_bytes

    def ratio_of(self, selection: paths.Prunable) -> float:
        """Stored over dense bytes of the leaves whose path ``selection`` matches (a regex or
        a predicate ``(path, None) -> bool``), e.g. :data:`paths.BERT_ENCODER_KERNELS`."""
        chosen = [r for r in self.rows if _matches(selection, r.path)]
        if not chosen:
            raise ValueError(f"{selection!r} matches none of the {len(self.rows)} leaves")
        return sum(r.stored_bytes for r in chosen) / sum(r.dense_bytes for r in chosen)

    def __str__(self) -> str:
        width = max(len(r.path) for r in self.rows)
        lines = [f"{'path':<{width}}  {'encoding':>8}  {'density':>7}  {'dense B':>11}  ratio"]
        for r in self.rows:
            size = int(np.prod(r.shape))
            density = r.nonzeros / size if size else 0.0
            lines.append(
                f"{r.path:<{width}}  {r.encoding:>8}  {density:>7.2%}  {r.dense_bytes:>11,}  "
                f"{r.stored_bytes / max(r.dense_bytes, 1):.3f}"
            )
        exact = "bit-exact" if self.values_dtype is None else f"values as {self.values_dtype}"
        lines.append(
            f"file {self.file_bytes:,} B for {self.dense_bytes:,} B dense: "
            f"{self.ratio:.3f} ({exact})"
        )
        return "\n".join(lines)


def _matches(selection: paths.Prunable, path: str) -> bool:
    if isinstance(selection, str | re.Pattern):
        return re.search(selection, path) is not None
    return bool(selection(path, None))


def _stored_dtype(dtype: np.dtype, values_dtype: str | None) -> np.dtype:
    if values_dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(values_dtype)
    return dtype


def _encode(x: np.ndarray, values_dtype: str | None) -> tuple[str, int, dict[str, np.ndarray]]:
    """(encoding, stored entries, parts) of the smallest encoding of ``x``."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out_dtype = _stored_dtype(x.dtype, values_dtype)
    if not (x.ndim and flat.size and x.dtype.itemsize in (1, 2, 4, 8)):  # no mask: dense
        return "dense", flat.size, {"values": flat.astype(out_dtype)}
    itemsize = out_dtype.itemsize
    keep = flat.view(f"u{x.dtype.itemsize}") != 0
    nnz = int(np.count_nonzero(keep))
    cols = x.shape[-1]
    col_t = np.uint16 if cols <= 2**16 else np.uint32
    ptr_t = np.uint32 if nnz < 2**32 else np.uint64
    sizes = {
        "dense": flat.size * itemsize,
        "bitmask": -(-flat.size // 8) + nnz * itemsize,
        "csr": (flat.size // cols + 1) * ptr_t().itemsize + nnz * (col_t().itemsize + itemsize),
    }
    encoding = min(sizes, key=sizes.__getitem__)  # dense wins ties
    if encoding == "dense":
        return encoding, nnz, {"values": flat.astype(out_dtype)}
    values = flat[keep].astype(out_dtype)
    if encoding == "bitmask":
        return encoding, nnz, {"mask": np.packbits(keep), "values": values}
    rows, cols_of = np.nonzero(keep.reshape(-1, cols))  # row-major, as flat[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=flat.size // cols))])
    parts = {"indptr": indptr.astype(ptr_t), "cols": cols_of.astype(col_t), "values": values}
    return encoding, nnz, parts


def _decode(entry: dict, parts: dict[str, np.ndarray]) -> np.ndarray:
    dtype, shape = jnp.dtype(entry["dtype"]), tuple(entry["shape"])
    values = parts["values"].astype(dtype)
    if entry["encoding"] == "dense":
        return values.reshape(shape)
    out = np.zeros(int(np.prod(shape)), dtype)
    if entry["encoding"] == "bitmask":
        out[np.unpackbits(parts["mask"], count=out.size).astype(bool)] = values
    else:
        indptr = parts["indptr"].astype(np.int64)
        counts = indptr[1:] - indptr[:-1]  # np.diff (numpy's stubs type it timedelta64 here)
        rows = np.repeat(np.arange(counts.size), counts)
        out[rows * shape[-1] + parts["cols"].astype(np.int64)] = values
    return out.reshape(shape)


def _crc(parts: dict[str, np.ndarray]) -> int:
    crc = 0
    for name in sorted(parts):
        crc = zlib.crc32(np.ascontiguousarray(parts[name]).view(np.uint8).tobytes(), crc)
    return crc


def _keys(path: tuple[Any, ...]) -> list[str | int]:
    keys = []
    for k in path:
        if not isinstance(k, jax.tree_util.DictKey) or not isinstance(k.key, str | int):
            raise TypeError(
                f"export stores nested dicts with str or int keys; {paths.path_str(path)} "
                f"goes through {k!r} (pass plain params, e.g. nnx.to_pure_dict(state))"
            )
        keys.append(k.key)
    return keys


def save(path: str | os.PathLike, params: Any, *, values_dtype: str | None = None) -> SizeReport:
    """Writes ``params`` to one compressed file.

    Args:
      path: the file to write (an existing file is overwritten; a folder is refused).
      params: nested dicts of arrays (jax or numpy).
      values_dtype: None (bit-exact), ``"float16"`` or ``"bfloat16"``: floating values
        rounded to that type (lossy; integer and bool leaves stay exact).

    Returns:
      The :class:`SizeReport` of the file.

    Raises:
      IsADirectoryError: ``path`` is a folder; FileNotFoundError: its parent is missing
        (both before anything is written).
    """
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"export.save writes one file and {path} is a folder; give a file path such as "
            f"{path / 'model.jpz.safetensors'}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"export.save: the folder {path.parent} does not exist")
    if values_dtype not in (None, *_LOSSY):
        raise ValueError(f"values_dtype must be None or one of {_LOSSY}, got {values_dtype!r}")
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    if not flat:
        raise ValueError("export.save got a tree with no arrays")
    leaves, rows, tensors = [], [], {}
    for i, (keypath, leaf) in enumerate(flat):
        x = np.asarray(jax.device_get(leaf))
        encoding, nnz, parts = _encode(x, values_dtype)
        leaves.append(
            {
                "path": _keys(keypath),
                "dtype": x.dtype.name,
                "shape": list(x.shape),
                "encoding": encoding,
                "crc32": _crc(parts),
            }
        )
        stored = sum(p.nbytes for p in parts.values())
        rows.append(LeafSize(paths.path_str(keypath), x.shape, encoding, nnz, x.nbytes, stored))
        tensors.update({f"{i}/{name}": part for name, part in parts.items()})
    header = {"format": FORMAT, "version": VERSION, "values_dtype": values_dtype}
    header["leaves"] = leaves
    save_file(tensors, str(path), metadata={FORMAT: json.dumps(header)})
    return SizeReport(tuple(rows), path.stat().st_size, values_dtype)


def load(path: str | os.PathLike) -> dict:
    """Reads a file written by :func:`save` back into nested dicts of numpy arrays.

    Raises:
      FileNotFoundError, IsADirectoryError: ``path`` is missing or a folder.
      ValueError: the file is not a jaxprune compressed checkpoint, cannot be parsed, or a
        leaf's bytes fail their CRC-32 (the message names the file and the leaf).
    """
    from safetensors import safe_open

    if not pathlib.Path(path).exists():
        raise FileNotFoundError(f"export.load: {path} does not exist")
    if pathlib.Path(path).is_dir():
        raise IsADirectoryError(f"export.load reads one file; {path} is a folder")

    try:
        with safe_open(str(path), "numpy") as f:
            meta = f.metadata() or {}
            names = f.keys() if FORMAT in meta else []
            tensors = {name: f.get_tensor(name) for name in names}
    except Exception as err:  # safetensors raises its own SafetensorError
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    if FORMAT not in meta:
        raise ValueError(f"{path} is a safetensors file but not a {FORMAT} checkpoint")
    try:
        header = json.loads(meta[FORMAT])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the {FORMAT} header is not valid JSON: {err}") from err
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: {FORMAT} version {header.get('version')}, expected {VERSION}")
    parts: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in tensors.items():
        index, part = name.split("/", 1)
        parts.setdefault(index, {})[part] = tensor
    out: dict = {}
    for i, entry in enumerate(header["leaves"]):
        leaf_parts = parts.get(str(i), {})
        if _crc(leaf_parts) != entry["crc32"]:
            name = "/".join(map(str, entry["path"]))
            raise ValueError(f"{path}: leaf {name} is corrupted (its CRC-32 does not match)")
        node = out
        for key in entry["path"][:-1]:
            node = node.setdefault(key, {})
        node[entry["path"][-1]] = _decode(entry, leaf_parts)
    return out


__all__ = [
    "FORMAT",
    "VERSION",
    "LeafSize",
    "SizeReport",
    "load",
    "save",
]
