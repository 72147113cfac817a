"""Shared plumbing of the loaders: where the files are, reading them with line numbers, errors.

Every malformed input raises :class:`DataFormatError` (a ``ValueError``) whose message starts
with ``path:line:``; every row skipped for a reason is counted and the counts are logged
(``logging.getLogger("jaxprune.data")``) once per file.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import datasets

log = logging.getLogger("jaxprune.data")

ENV_VAR = "JAXPRUNE_DATA_DIR"
SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


class DataFormatError(ValueError):
    """A malformed data file: the message names the file and, where known, the line."""

    def __init__(self, path: os.PathLike | str, line: int | None, message: str) -> None:
        self.path = pathlib.Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {message}")


def data_root(data_dir: os.PathLike | str | None) -> pathlib.Path | None:
    """The local data folder: ``data_dir``, else ``$JAXPRUNE_DATA_DIR``, else None (the Hub)."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    return None if chosen is None else pathlib.Path(chosen).expanduser()


def local_file(root: pathlib.Path, *parts: str) -> pathlib.Path:
    """``root/parts...``; FileNotFoundError naming the expected path when it is missing."""
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"expected {path} (data_dir={root}, layout <data_dir>/{'/'.join(parts)}); "
            f"pass data_dir= or set ${ENV_VAR} to a folder with the original files, "
            "or leave both unset to load from the Hugging Face Hub"
        )
    return path


def norm_split(split: str, allowed: tuple[str, ...], task: str) -> str:
    """``split`` with dev/valid/val read as validation; ValueError listing ``allowed``."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in allowed:
        raise ValueError(f"unknown split {split!r} for {task}; choose from {allowed}")
    return split


def read_lines(path: pathlib.Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` from 1, split on ``\\n`` only (no universal newlines: a stray
    ``\\r`` or U+2028 inside a sentence stays in it); the line ending is removed."""
    with open(path, encoding=encoding, newline="\n") as f:
        for number, line in enumerate(f, start=1):
            yield number, line.rstrip("\n").removesuffix("\r")


def read_tsv(path: pathlib.Path) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` of a tab-separated file with quoting off (GLUE's format: a
    field may start with ``"``). A UTF-8 BOM is dropped; blank lines are skipped and counted."""
    blank = 0
    for number, line in read_lines(path, encoding="utf-8-sig"):
        if not line:
            blank += 1
            continue
        yield number, line.split("\t")
    report(path, {"blank lines": blank})


def read_json(path: pathlib.Path) -> Any:
    """Parsed JSON; a syntax error (a truncated download) names the file, line and column."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            path, err.lineno, f"invalid JSON at column {err.colno}: {err.msg} (truncated file?)"
        ) from err


def require(obj: Any, keys: tuple[str, ...], path: pathlib.Path, where: str) -> None:
    """DataFormatError naming the file and the JSON location ``where`` if a key is missing."""
    if not isinstance(obj, Mapping):
        raise DataFormatError(path, None, f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataFormatError(path, None, f"{where}: missing key(s) {missing}")


def report(path: pathlib.Path, counts: Mapping[str, int], level: int = logging.WARNING) -> None:
    """Logs each nonzero count of skipped or changed rows of ``path`` (INFO for the expected
    ones, like CoNLL's ``-DOCSTART-`` lines; WARNING otherwise)."""
    for reason, n in counts.items():
        if n:
            log.log(level, "%s: %d %s", path, n, reason)


def finish(
    columns: Mapping[str, list[Any]], features: datasets.Features, path: pathlib.Path
) -> datasets.Dataset:
    """The in-memory Dataset of ``columns`` (ordered like ``features``), logging its size."""
    ds = datasets.Dataset.from_dict({k: columns[k] for k in features}, features=features)
    log.info("%s: %d rows", path, len(ds))
    return ds


def from_hub(
    repo: str,
    split: str,
    name: str | None = None,
    *,
    parquet_export: bool = False,
) -> datasets.Dataset:
    """``datasets.load_dataset`` of one split. ``parquet_export`` reads the Hub's Parquet
    conversion (branch ``refs/convert/parquet``, files ``<name>/<split>/*.parquet``), for
    repositories that only hold a loading script, which datasets >= 4 no longer runs."""
    kwargs: dict[str, Any] = {"split": split}
    if parquet_export:
        kwargs |= {
            "revision": "refs/convert/parquet",
            "data_files": {split: f"{name or 'default'}/{split}/*.parquet"},
        }
    elif name is not None:
        kwargs["name"] = name
    try:
        return datasets.load_dataset(repo, **kwargs)
    except Exception as err:  # offline, renamed repository, ...: say how to go local
        raise ConnectionError(
            f"loading {repo} ({name or 'default'}, {split}) from the Hugging Face Hub failed "
            f"({type(err).__name__}: {err}); for local files pass data_dir= or set ${ENV_VAR}"
        ) from err


def conform(ds: datasets.Dataset, features: datasets.Features) -> datasets.Dataset:
    """``ds`` with exactly the columns of ``features``, in that order and with those types."""
    missing = [c for c in features if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset lacks columns {missing}; it has {ds.column_names}")
    ds = ds.select_columns(list(features))
    return ds if ds.features == features else ds.cast(features)
