"""Masks saved along a run, to see how they move (``LoopConfig.masks_every``).

One file per saved step, ``run_dir/masks/step_<step>.npz``: every prunable leaf's mask,
bit-packed (one bit per entry: MiniLM's 10.6M prunable weights take 1.3 MB a step), under
its ``/``-joined path, with its shape.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxprune import paths

DIR = "masks"
_NAME = re.compile(r"step_(\d+)\.npz")


def save(run_dir: str | pathlib.Path, step: int, masks: Any) -> None:
    """Writes ``masks`` (bool pytree, ``None`` where not pruned) as of ``step``. Every process
    must call it (sharded masks are gathered); process 0 writes."""
    named = dict(zip(paths.leaf_paths(masks), jax.tree.leaves(masks), strict=True))
    named = multihost_utils.process_allgather(named, tiled=True)
    if jax.process_index() != 0:
        return
    folder = pathlib.Path(run_dir) / DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}  # np.savez types its **kwargs as its own flags
    for path, m in named.items():
        m = np.asarray(m, bool)
        arrays[f"{path}|bits"] = np.packbits(m.ravel())
        arrays[f"{path}|shape"] = np.asarray(m.shape, np.int64)
    tmp = folder / f".step_{step:07d}.npz"
    np.savez(tmp, **arrays)
    tmp.replace(folder / f"step_{step:07d}.npz")  # never a half-written file under its name


def load(run_dir: str | pathlib.Path) -> dict[int, dict[str, np.ndarray]]:
    """Step -> {leaf path: bool mask}, every step saved in ``run_dir``, in step order.

    Raises:
      FileNotFoundError: ``run_dir`` holds no saved masks.
    """
    folder = pathlib.Path(run_dir) / DIR
    files = sorted(
        (int(m.group(1)), f)
        for f in (folder.iterdir() if folder.is_dir() else ())
        if (m := _NAME.fullmatch(f.name))
    )
    if not files:
        raise FileNotFoundError(
            f"no saved masks in {folder}: run with masks_every > 0 (Job.masks_every)"
        )
    out: dict[int, dict[str, np.ndarray]] = {}
    for step, f in files:
        with np.load(f) as data:
            leaves = sorted({k.rsplit("|", 1)[0] for k in data.files})
            out[step] = {
                p: np.unpackbits(data[f"{p}|bits"], count=int(np.prod(data[f"{p}|shape"])))
                .astype(bool)
                .reshape(tuple(data[f"{p}|shape"]))
                for p in leaves
            }
    return out


def difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Fraction of mask entries that differ between two saved mask sets of one model.

    Raises:
      ValueError: the two sets have different leaves or shapes.
    """
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError(
            "the mask sets differ in leaves or shapes: "
            f"{sorted(set(a) ^ set(b)) or [k for k in a if a[k].shape != b[k].shape]}"
        )
    changed = sum(int(np.count_nonzero(a[k] != b[k])) for k in a)
    return changed / sum(a[k].size for k in a)


__all__ = ["DIR", "difference", "load", "save"]
