"""End-to-end recipes: prune a Hugging Face checkpoint on a task with one method.

    from jaxprune.recipes import Job, run
    result = run(Job(model="minilm", task="sst2", method="pins", sparsity=0.9, steps=600),
                 "runs/pins")

checks the job (:func:`validate`), loads the model and the task's data, builds the method,
trains it with the engine (checkpoints, logs, resumption), evaluates on the dev set with the
task's official metric, and exports the pruned model as a Hugging Face folder
(``run_dir/export``). Task families: GLUE (:mod:`.glue`), SQuAD (:mod:`.squad`), CoNLL-2003
NER (:mod:`.ner`) and data-to-text with a causal LM (:mod:`.d2t`). Every family jaxprune
builds (:data:`jaxprune.recipes.common.FAMILIES`: BERT-like encoders, DeBERTa-v2/v3 and
ModernBERT for the encoder tasks; GPT-2 and Llama / Qwen2 / Mistral for data-to-text) runs
with its own prunable matrices by default.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import typing

import jax

from jaxprune import architectures, hf, methods
from jaxprune.metrics import GLUE_TASKS, glue_task
from jaxprune.recipes import common, d2t, glue, labels, ner, squad
from jaxprune.recipes.job import (
    RESUMABLE_CHANGES,
    Job,
    conforms,
    load,
    override,
    type_name,
    with_options,
)
from jaxprune.train.loop import RunConfigError, check_resumable

D2T_TASKS = ("e2e", "webnlg", "dart")
# A Hugging Face Hub id: "name" or "namespace/name" (anything else must be a local folder).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def family(task: str) -> str:
    """``glue``, ``squad``, ``ner`` or ``d2t``."""
    task = task.lower()
    if task in GLUE_TASKS:
        return "glue"
    if task == "squad":
        return "squad"
    if task == "conll2003":
        return "ner"
    if task in D2T_TASKS:
        return "d2t"
    raise ValueError(
        f"no recipe for task {task!r}: GLUE ({', '.join(GLUE_TASKS)}), squad, conll2003, "
        f"{', '.join(D2T_TASKS)}"
    )


def _check_method(job: Job, family: common.Family | None = None) -> methods.Method:
    """The job's method (for the model's ``family`` when known); a ValueError names
    ``method`` or the ``method_options`` entry, or says why the family cannot run it."""
    name = "magnitude" if job.method == "dense" else job.method
    if name not in methods.names():
        raise ValueError(
            f"method={job.method!r} is not a method; choose from {['dense', *methods.names()]}"
        )
    preset = methods.get(name)
    assert dataclasses.is_dataclass(preset)  # every preset is a frozen dataclass
    hints = typing.get_type_hints(type(preset))
    fields = {f.name for f in dataclasses.fields(preset)}
    for key, value in job.options.items():
        if key not in fields:
            raise ValueError(
                f"method_options.{key}: {job.method} has no option {key!r}; options: "
                f"{sorted(fields)}"
            )
        if not conforms(value, hints[key]):
            raise ValueError(
                f"method_options.{key}: {job.method} expects {type_name(hints[key])}, got {value!r}"
            )
    try:
        method = common.method_for(job)
    except ValueError as err:
        raise ValueError(f"method_options: {err}") from err
    if family is None:
        return method
    return common.method_for(job, family=family)  # refuses what the family cannot run


def _fits(field: str, name: str, model_type: str | None, task: str, what: str) -> None:
    """ValueError unless ``model_type`` is a family jaxprune builds and its kind (encoder,
    causal LM) is the one ``task`` needs."""
    if common.family_of_type(model_type) is None:
        raise ValueError(
            f"{field}={name!r} is a {model_type} {what}, which jaxprune does not build "
            f"(encoders: {', '.join(hf.ENCODERS)}; decoders: {', '.join(hf.DECODERS)})"
        )
    d2t = family(task) == "d2t"
    if (model_type in hf.DECODERS) != d2t:
        others = ", ".join(t for t in hf.DECODERS if t != "gpt2")
        needs = (
            f"GPT-2 or another causal LM ({others})"
            if d2t
            else "an encoder (BERT, RoBERTa, ELECTRA, DeBERTa, ModernBERT, ...)"
        )
        raise ValueError(f"{field}={name!r} is a {model_type} {what}; task {task} needs {needs}")


def _check_folder(field: str, name: str, task: str) -> str | None:
    """A local checkpoint folder for ``task`` (or a plausible Hub id, fetched later); its
    ``model_type`` (None for a Hub id)."""
    path = hf.resolve(name) if name.lower() in hf.EMBEDDED else pathlib.Path(name).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(name):
            return None
        raise FileNotFoundError(f"{field}={name!r}: no such folder (nor a Hugging Face Hub id)")
    if not path.is_dir():
        raise NotADirectoryError(f"{field}={name!r} is a file; it must be a checkpoint folder")
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{field}={name!r}: {path} has no config.json (is it a Hugging Face checkpoint folder?)"
        )
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as err:
        raise ValueError(f"{field}={name!r}: {config} is not valid JSON ({err})") from err
    _fits(field, name, model_type, task, "checkpoint")
    return model_type


def _check_architecture(field: str, name: str, task: str) -> str | None:
    """``random_init``: a folder, an embedded model, or a published architecture that fits
    ``task``; its ``model_type``."""
    if name.lower() in hf.EMBEDDED or pathlib.Path(name).expanduser().exists():
        return _check_folder(field, name, task)
    base = architectures.base_architecture(name)
    if base is None:
        raise ValueError(
            f"{field}={name!r}: random_init needs its architecture, and {name} is neither a "
            f"folder nor a published architecture known here ({', '.join(architectures.PUBLIC)}"
            f"; fine-tuned: {', '.join(architectures.FINE_TUNED)})"
        )
    model_type = architectures.PUBLIC[base][0]
    _fits(field, name, model_type, task, "architecture")
    return model_type


def _check_tokenizer(name: str) -> None:
    if name.lower() in hf.EMBEDDED or _HUB_ID.fullmatch(name):
        return
    if not pathlib.Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"tokenizer={name!r}: no such folder (nor a Hugging Face Hub id)")


def validate(job: Job, *, train: bool = True) -> None:
    """Refuses a job that cannot run as asked, before anything is loaded.

    Checks the task, the model (and teacher) folder and whether it fits the task (a causal
    LM for data-to-text, an encoder otherwise; a teacher of the student's family), packing,
    SQuAD's window stride and, with ``train``: the method and its options (names and types
    against the preset), the teacher the method needs or would ignore, the method's optimizer
    when ``steps`` fixes the run's length (a PINS or PLATON schedule pruning before the
    criterion's window is refused: :class:`jaxprune.optim.NoEvidenceError`), that the global
    batch splits over the mesh's data axis, that ``train_subset`` fills a batch,
    that the model's family can run the method (:data:`jaxprune.recipes.common.FAMILIES`:
    e.g. a decoder refuses sparsebert and sdp), and last
    which of a classifying teacher's outputs is which label (``teacher_labels`` or the
    teacher's ``id2label``, reading only its config.json:
    :func:`jaxprune.recipes.labels.teacher_order`).

    Raises:
      ValueError: naming the field (``task=...``, ``method_options.begin: ...``).
      FileNotFoundError, NotADirectoryError: a model or teacher folder is missing (or a Hub
        teacher's config.json, where its label order is needed and not set).
    """
    kind = family(job.task)
    if job.task != job.task.lower():
        raise ValueError(f"task={job.task!r}: task names are lower case ({job.task.lower()!r})")
    if job.pack and kind != "glue":
        raise ValueError(f"pack=True packs sentence-level GLUE examples; {job.task} is {kind}")
    if kind == "squad" and job.doc_stride >= job.max_length:
        raise ValueError(
            f"doc_stride={job.doc_stride} must be below max_length={job.max_length}: "
            f"SQuAD windows overlap by doc_stride tokens"
        )
    check = _check_architecture if job.random_init else _check_folder
    model_type = check("model", job.model, job.task)
    if job.tokenizer is not None:
        _check_tokenizer(job.tokenizer)
    labels.model_order(job)  # reads the model's config.json only
    if not train:
        return
    model_family = common.family_of_type(model_type)
    method = _check_method(job, model_family)
    if method.teacher == "dense" and job.teacher is None:
        raise ValueError(
            f"teacher: {job.method} distils from a fine-tuned dense teacher; set teacher= to "
            f"its folder (--set teacher=PATH)"
        )
    if method.teacher == "none" and job.teacher is not None:
        raise ValueError(f"teacher={job.teacher!r}: {job.method} uses no teacher; unset it")
    if job.teacher is None and job.teacher_labels is not None:
        raise ValueError(
            f"teacher_labels={job.teacher_labels!r} orders a teacher's outputs, but no teacher "
            f"is set; unset it (--set teacher_labels=None)"
        )
    if job.teacher is not None:
        teacher_type = check("teacher", job.teacher, job.task)
        teacher_family = common.family_of_type(teacher_type)
        if None not in (model_family, teacher_family) and teacher_family != model_family:
            raise ValueError(
                f"teacher={job.teacher!r} is a {teacher_type} model and the student a "
                f"{model_type} one: a teacher reads the student's token ids (and sparsebert "
                f"its layers' shapes), so it must be of the student's family"
            )
    refresh = (getattr(method, "objective", None), getattr(method, "teacher_mode", None))
    if refresh == ("self_regularization", "best") and job.eval_every is None:
        raise ValueError(
            f"eval_every: {job.method} with teacher_mode='best' refreshes its teacher when dev "
            f"improves, so it needs evaluations during training; set eval_every"
        )
    objective = getattr(method, "objective", None)
    regression = family(job.task) == "glue" and glue_task(job.task).num_classes is None
    if objective in ("kd", "self_regularization") and regression:
        raise ValueError(
            f"task={job.task!r}: {job.method} with objective {objective!r} distils class "
            f"probabilities (a KL between softmaxes), and {job.task} predicts one score; use "
            f"objective='task' (PINS's paper has no STS-B row either)"
        )
    if objective == "sparsebert" and family(job.task) in ("squad", "ner"):
        raise ValueError(
            f"task={job.task!r}: {job.method}'s prediction loss is a sequence-level soft "
            f"cross-entropy (or MSE for regression), as in the SparseBERT paper's GLUE runs; "
            f"it has no per-token or span form here: use a GLUE task"
        )
    if job.pack and getattr(method, "objective", None) == "sparsebert":
        raise ValueError(
            f"pack=True: {job.method}'s MSE terms average over the padded positions of a row; "
            f"train it unpacked"
        )
    if job.steps is not None:  # the schedule is known: build the optimizer, which checks it
        steps = job.steps
        run = methods.Run(
            total_steps=steps,
            learning_rate=job.learning_rate,
            warmup_steps=int(job.warmup_ratio * steps),
            weight_decay=job.weight_decay,
        )
        method.optimizer(run, None)
    common.data_axis(job.batch_size, job.model_parallel, jax.device_count())
    if job.train_subset is not None and job.train_subset < job.batch_size:
        raise ValueError(
            f"train_subset={job.train_subset} is smaller than batch_size={job.batch_size}: "
            f"not one full batch (the last partial batch of an epoch is dropped)"
        )
    labels.teacher_order(job)  # last: it may read the teacher's config.json


def prepare(job: Job, *, train: bool = True) -> common.Prepared:
    """Loads ``job.model`` and the task's data for ``job`` (``train``: the training set too),
    after :func:`validate`."""
    validate(job, train=train)
    return _load(job, train=train)


def _load(job: Job, *, train: bool) -> common.Prepared:
    recipe = {"glue": glue, "squad": squad, "ner": ner, "d2t": d2t}[family(job.task)]
    return recipe.prepare(job, train=train)


def run(job: Job, run_dir: str | pathlib.Path, *, restart: bool = False) -> dict:
    """Runs ``job`` into ``run_dir``; returns the result record also written to
    ``run_dir/result.json``.

    A checkpoint in ``run_dir`` is resumed when it belongs to the same job (equal in every
    field but :data:`RESUMABLE_CHANGES`); one of another job is refused (RunConfigError, a
    ValueError naming the differing fields) before anything is loaded or overwritten.
    ``restart``: delete what an earlier run left in ``run_dir`` and start from step 0.
    """
    validate(job)
    if not restart:
        defaults = labels.resume_defaults(job, labels.teacher_order(job))
        check_resumable(run_dir, job.as_dict(), RESUMABLE_CHANGES, defaults)
    return common.train_and_export(job, run_dir, _load(job, train=True), restart=restart)


def evaluate(job: Job) -> dict:
    """Dev metrics of ``job.model`` as it is (e.g. an exported pruned folder) on ``job.task``."""
    return prepare(job, train=False).dev_metrics()


__all__ = [
    "D2T_TASKS",
    "RESUMABLE_CHANGES",
    "Job",
    "RunConfigError",
    "evaluate",
    "family",
    "load",
    "override",
    "prepare",
    "run",
    "validate",
    "with_options",
]
