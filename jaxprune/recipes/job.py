"""A run's settings as one typed, frozen record, and ``--set key=value`` overrides.

Experiment configs (``experiments/configs/*.py``) are Python files that define
``VARIANTS: dict[str, Job]``, one per row of a paper's table; :func:`load` picks one and
:func:`override` applies command-line changes with the field's type checked.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import pathlib
import types
import typing
from collections.abc import Iterable, Sequence
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
      masks_every: save the masks every this many steps to ``run_dir/masks/`` (criterion
        methods; read back with :func:`jaxprune.train.mask_history.load`). None: never.
      eval_batch_size: evaluation batch.
      pack: pack several training examples into each row (GLUE; far less padding, see
        :class:`jaxprune.data.Batcher`); ``batch_size`` still counts examples. SparseBERT
        refuses packed rows (its MSE terms average over padded positions).
      max_new_tokens: data-to-text generation length.
      seed: parameter init of new heads, data order, dropout.
      model_parallel: size of the mesh's ``model`` axis (the rest of the devices is ``data``).
      fsdp: also shard parameters and optimizer state over ``data``.
      shard_state: shard the optimizer and pruning state (Adam moments, masks, criterion
        or score state) and a frozen teacher over ``data`` while parameters stay
        replicated (ZeRO-1 style): data-parallel memory near FSDP's, one all-gather of the
        updates per step. Implied for the state by ``fsdp``.
      data_dir: local data folder (``JAXPRUNE_DATA_DIR`` when None), else the Hub.
      teacher: fine-tuned dense checkpoint for methods that distil from one (PINS: its
        first self-teacher); refused for a method that uses no teacher.
      teacher_labels: which of the teacher's outputs is which of the dataset's labels, for a
        classification teacher (GLUE classification, CoNLL-2003 NER): entry ``i`` is the
        teacher's output index for the dataset's label ``i`` (TextAttack's MNLI checkpoints:
        ``(1, 2, 0)``, as the PINS authors' code permutes them). None: read from the
        teacher's ``id2label``, refused when its names do not fix the order (see
        :func:`jaxprune.recipes.labels.teacher_order`). A permutation of ``0..n-1``; JSON
        lists are taken as tuples.
      model_labels: the same for ``model``'s own classifier, where its checkpoint carries
        a trained one for the task (a fine-tuned model to prune, or the model ``jaxprune
        eval`` scores): entry ``i`` is its output index for the dataset's label ``i``. None:
        read from its ``id2label``, refused when a trained head's names do not fix the
        order (:func:`jaxprune.recipes.labels.model_order`); ignored for a new head.
      random_init: start from random weights of the model's architecture (and the
        teacher's) instead of its checkpoint: a smoke test of a paper-scale run where the
        weights are out of reach. ``model`` and ``teacher`` may then be names of
        :data:`jaxprune.architectures.PUBLIC` (or their fine-tuned ids) as well as folders.
        Never a fallback: a missing checkpoint is an error without it.
      tokenizer: a tokenizer folder, ``minilm`` or a Hub id; None: the model's own. Its
        vocabulary must fit the model's embedding table.
      label: the row name in the paper's table (``report`` matches reference numbers by it).
      reference: ``<file>/<table>`` of ``experiments/reference`` that this run reproduces.

    A run folder resumes only a job equal to the one that wrote it, except in the fields
    of :data:`RESUMABLE_CHANGES`, which do not change the result.
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
    masks_every: int | None = None
    eval_batch_size: int = 64
    pack: bool = False
    max_new_tokens: int = 64
    seed: int = 0
    model_parallel: int = 1
    fsdp: bool = False
    shard_state: bool = False
    data_dir: str | None = None
    teacher: str | None = None
    teacher_labels: tuple[int, ...] | None = None
    model_labels: tuple[int, ...] | None = None
    random_init: bool = False
    tokenizer: str | None = None
    label: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        for name in (
            "batch_size",
            "max_length",
            "doc_stride",
            "eval_batch_size",
            "max_new_tokens",
            "model_parallel",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps", "train_subset", "eval_subset", "eval_every", "masks_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.steps is None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0 when steps is None, got {self.epochs}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.learning_rate > 0:  # NaN too
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for field, whose in (("teacher_labels", "teacher"), ("model_labels", "model")):
            order = getattr(self, field)
            if isinstance(order, list):  # read back from a run's JSON
                order = tuple(order)
                object.__setattr__(self, field, order)
            if order is not None and (
                not isinstance(order, tuple)
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in order)
                or sorted(order) != list(range(len(order)))
                or len(order) < 2
            ):
                raise ValueError(
                    f"{field} must be a permutation of 0..n-1 (n >= 2: for each of the "
                    f"dataset's n labels, the {whose}'s output index, e.g. "
                    f"--set {field}=1,2,0), got {order!r}"
                )

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


#: The :class:`Job` fields that cannot change a run's result, so a run folder resumes when
#: only they differ: where the data lives (``data_dir``: the same published files, moved),
#: how dev examples are grouped (``eval_batch_size``: the same metrics up to float
#: rounding), which masks are saved along the way (``masks_every``), the device layout
#: (``model_parallel``, ``fsdp``, ``shard_state``: checkpoints restore into any mesh) and the
#: report's names (``label``, ``reference``). Every other field changes what is trained or
#: how it is scored.
RESUMABLE_CHANGES = frozenset(
    {
        "data_dir",
        "eval_batch_size",
        "masks_every",
        "model_parallel",
        "fsdp",
        "shard_state",
        "label",
        "reference",
    }
)

#: Every :class:`Job` field's default, for run folders written before a field existed.
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Job)}


def with_options(job: Job, **options: Any) -> Job:
    """``job`` with ``options`` merged into its method options."""
    merged = {**job.options, **options}
    return dataclasses.replace(job, method_options=tuple(sorted(merged.items())))


_HINTS = typing.get_type_hints(Job)


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the type ``hint``: unions, ``Literal``, None, ``float`` taking
    ints, ``bool`` not counting as a number; of a generic (``tuple[...]``) only the outer type
    is checked, and ``Any`` takes anything."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return any(conforms(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):
        number = (int,) if hint is int else (int, float)
        return isinstance(value, number) and not isinstance(value, bool)
    target = origin if origin is not None else hint
    return not isinstance(target, type) or isinstance(value, target)


def type_name(hint: Any) -> str:
    """``int | None``, ``float``, ``Literal['global', 'local']``, ..."""
    return str(hint).replace("typing.", "") if typing.get_args(hint) else hint.__name__


def _check_type(name: str, value: Any) -> Any:
    hint = _HINTS[name]
    if isinstance(value, list) and conforms(tuple(value), hint):
        value = tuple(value)  # teacher_labels=[1,2,0] as well as 1,2,0
    if not conforms(value, hint):
        raise ValueError(f"--set {name}: expected {type_name(hint)}, got {value!r}")
    allowed = typing.get_args(hint) or (hint,)
    if float in allowed and int not in allowed and isinstance(value, int):
        return float(value)  # learning_rate=1 (bools were refused above)
    return value


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
        elif key == "method_options":
            raise ValueError(
                "--set method_options: set one option at a time, method_options.NAME=VALUE"
            )
        elif key in fields:
            changes[key] = _check_type(key, _parse(text))
        else:
            hint = _did_you_mean(key, fields)
            raise ValueError(f"--set: unknown field {key!r}{hint}; fields: {sorted(fields)}")
    job = dataclasses.replace(job, **changes)
    return with_options(job, **options) if options else job


def load_module(path: str | pathlib.Path) -> types.ModuleType:
    """Imports a config file by path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"jaxprune_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"config {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file: say which and why, in one line
        raise ValueError(f"config {path} failed to load: {type(err).__name__}: {err}") from err
    variants = getattr(module, "VARIANTS", None)
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"config {path} must define VARIANTS: a non-empty dict of name -> Job")
    wrong = [name for name, job in variants.items() if not isinstance(job, Job)]
    if wrong:
        raise ValueError(f"config {path}: VARIANTS[{wrong[0]!r}] is not a Job")
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
        raise KeyError(
            f"{path} has no variant {variant!r}{_did_you_mean(variant, variants)}; "
            f"variants: {sorted(variants)}"
        )
    return variant, variants[variant]


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "DEFAULTS",
    "RESUMABLE_CHANGES",
    "Job",
    "conforms",
    "load",
    "load_module",
    "override",
    "type_name",
    "with_options",
]
