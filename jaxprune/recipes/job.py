"""A run's settings as one typed, frozen record, and ``--set key=value`` overrides.

Experiment configs (``experiments/configs/*.py``) are Python files that define
``VARIANTS: dict[str, Job]``, one per row of a paper's table; :func:`load` picks one and
:func:`override` applies command-line changes with the field's type checked.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pathlib
import types
import typing
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Job:
    """One pruning (or dense fine-tuning) run.

    Attributes:
      model: checkpoint folder, ``minilm`` (embedded), a Hub id, or ``gpt2``-family for
        data-to-text.
      task: a GLUE task (sst2, mnli, ...), ``squad``, ``conll2003``, or ``e2e`` / ``webnlg``
        / ``dart`` (data-to-text with GPT-2).
      method: a :func:`jaxprune.methods.get` name, or ``dense`` for plain fine-tuning.
      method_options: overrides of the method's preset, as ``((name, value), ...)``.
      sparsity: final sparsity of the prunable weights (1 - the papers' "remaining").
      steps: optimizer steps; None: ``epochs`` passes over the (sub)set.
      epochs: training length when ``steps`` is None.
      batch_size: global batch (all devices and hosts).
      max_length: tokens per example (SQuAD: per window; data-to-text: prompt + target).
      doc_stride: SQuAD window overlap in tokens.
      learning_rate / warmup_ratio / weight_decay: AdamW, linear warm-up then decay to 0.
      train_subset / eval_subset: a fixed seeded subset of that many examples; None: all.
      eval_every: evaluate every this many steps (None: at the end only).
      eval_batch_size: evaluation batch.
      pack: pack several training examples into each row (GLUE; far less padding, see
        :class:`jaxprune.data.Batcher`); ``batch_size`` still counts examples. SparseBERT
        refuses packed rows (its MSE terms average over padded positions).
      max_new_tokens: data-to-text generation length.
      seed: parameter init of new heads, data order, dropout.
      model_parallel: size of the mesh's ``model`` axis (the rest of the devices is ``data``).
      fsdp: also shard parameters and optimizer state over ``data``.
      data_dir: local data folder (``JAXPRUNE_DATA_DIR`` when None), else the Hub.
      teacher: fine-tuned dense checkpoint for methods that distil from one.
      label: the row name in the paper's table (``report`` matches reference numbers by it).
      reference: ``<file>/<table>`` of ``experiments/reference`` that this run reproduces.
    """

    model: str = "minilm"
    task: str = "sst2"
    method: str = "pins"
    method_options: tuple[tuple[str, Any], ...] = ()
    sparsity: float = 0.9
    steps: int | None = None
    epochs: float = 3.0
    batch_size: int = 32
    max_length: int = 128
    doc_stride: int = 128
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    train_subset: int | None = None
    eval_subset: int | None = None
    eval_every: int | None = None
    eval_batch_size: int = 64
    pack: bool = False
    max_new_tokens: int = 64
    seed: int = 0
    model_parallel: int = 1
    fsdp: bool = False
    data_dir: str | None = None
    teacher: str | None = None
    label: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        for name in ("batch_size", "max_length", "eval_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or None, got {self.steps}")
        if self.steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0 when steps is None, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.method_options)

    def total_steps(self, batches_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round(self.epochs * batches_per_epoch))

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["method_options"] = dict(self.method_options)
        return out


def with_options(job: Job, **options: Any) -> Job:
    """``job`` with ``options`` merged into its method options."""
    merged = {**job.options, **options}
    return dataclasses.replace(job, method_options=tuple(sorted(merged.items())))


_HINTS = typing.get_type_hints(Job)


def _check_type(name: str, value: Any) -> Any:
    hint = _HINTS[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if any(isinstance(value, t) for t in allowed if isinstance(t, type)):
        return value
    names = " | ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ValueError(f"--set {name}: expected {names}, got {value!r}")


def _parse(text: str) -> Any:
    """A Python literal (``3``, ``0.5``, ``None``, ``'x'``) or else the plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(job: Job, assignments: Sequence[str]) -> Job:
    """Applies ``key=value`` strings: a :class:`Job` field, or ``method_options.NAME``.

    Values are Python literals or bare strings (``task=rte``, ``steps=100``,
    ``teacher=None``, ``method_options.teacher_mode=best``); a field's type is checked.
    """
    changes: dict[str, Any] = {}
    options: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(Job)}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key.startswith("method_options."):
            options[key.removeprefix("method_options.")] = _parse(text)
        elif key in fields and key != "method_options":
            changes[key] = _check_type(key, _parse(text))
        else:
            raise ValueError(f"--set: unknown field {key!r}; fields: {sorted(fields)}")
    job = dataclasses.replace(job, **changes)
    return with_options(job, **options) if options else job


def load_module(path: str | pathlib.Path) -> types.ModuleType:
    """Imports a config file by path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"jaxprune_config_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "VARIANTS", None), dict) or not module.VARIANTS:
        raise ValueError(f"config {path} must define VARIANTS: a non-empty dict of name -> Job")
    return module


def load(spec: str) -> tuple[str, Job]:
    """``path/to/config.py:variant`` -> ``(variant, job)``; the variant may be omitted when
    the file has only one."""
    path, _, variant = spec.partition(":")
    variants: dict[str, Job] = load_module(path).VARIANTS
    if not variant:
        if len(variants) != 1:
            raise ValueError(f"{path} has {len(variants)} variants; pick one: {path}:NAME with "
                             f"NAME in {sorted(variants)}")  # fmt: skip
        variant = next(iter(variants))
    if variant not in variants:
        raise KeyError(f"{path} has no variant {variant!r}; variants: {sorted(variants)}")
    return variant, variants[variant]
