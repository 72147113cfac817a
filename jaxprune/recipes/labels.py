"""Which of a teacher's outputs is which of the dataset's labels.

A fine-tuned classifier's outputs come in the order its trainer numbered the labels, which
need not be the dataset's: TextAttack's MNLI checkpoints put contradiction first, so GLUE
MNLI's label ``i`` is their output ``[1, 2, 0][i]`` (the PINS authors' code permutes them
so). Distilling such a teacher as it is trains the student towards the wrong classes, with
no error. A job whose teacher classifies (GLUE classification, CoNLL-2003 NER) therefore
fixes the order (:func:`teacher_order`): the job's ``teacher_labels``, else the names of the
teacher config's ``id2label`` when they are the dataset's; otherwise it is refused.

:func:`reorder_outputs` applies the order once, to the teacher's output layer when the
teacher is loaded (:func:`jaxprune.recipes.common.load_model`), so every loss and forward
that uses the teacher's params sees logits in the dataset's order. Reordering the weights
rather than wrapping the teacher's forward keeps PINS right: its self-teacher starts as the
loaded teacher and is later replaced by the student, whose outputs are already in the
dataset's order and must not be permuted again.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxprune import data, hf, metrics
from jaxprune.data.conll import NER
from jaxprune.models import logical_axes
from jaxprune.recipes.job import DEFAULTS, Job

_GENERIC = re.compile(r"label_\d+")  # transformers' names for unnamed labels
_HEAD = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}


def dataset_labels(task: str) -> tuple[str, ...] | None:
    """The dataset's label names in id order for a classification task: GLUE's (MNLI:
    entailment, neutral, contradiction) or CoNLL-2003's NER tags; None for the others
    (STS-B regression, SQuAD, data-to-text)."""
    task = task.lower()
    if task == "conll2003":
        return NER
    if task in metrics.GLUE_TASKS:
        if metrics.glue_task(task).num_classes is None:
            return None
        name = "mnli" if task.startswith("mnli") or task == "ax" else task
        return data.GLUE_TASKS[name].names
    return None


def _outputs(task: str) -> str:
    """What the teacher of a task without labels outputs."""
    if task in metrics.GLUE_TASKS:
        return "a similarity score (regression)"
    if task == "squad":
        return "start and end logits over the tokens (question answering)"
    return "next-token logits (data-to-text)"


def teacher_config(name: str) -> dict[str, Any]:
    """The teacher's config.json: a folder's, an embedded model's, or a Hub id's (from the
    local Hugging Face cache, else fetched alone; nothing else is downloaded).

    Raises:
      FileNotFoundError: a Hub id whose config.json is neither cached nor fetchable.
      ValueError: the file is not JSON.
    """
    if name.lower() in hf.EMBEDDED:
        path = hf.resolve(name) / "config.json"
    elif pathlib.Path(name).expanduser().is_dir():
        path = pathlib.Path(name).expanduser() / "config.json"
    else:
        path = _hub_config(name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"teacher={name!r}: {path} is not valid JSON ({err})") from err


def _hub_config(name: str) -> pathlib.Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return pathlib.Path(cached)
        return pathlib.Path(hf_hub_download(name, "config.json"))
    except Exception as err:  # offline, unknown id, auth: say all of it
        raise FileNotFoundError(
            f"teacher={name!r}: its config.json is not in the local Hugging Face cache and "
            f"fetching it failed ({type(err).__name__}: {err}); jaxprune reads its id2label "
            f"to put the teacher's outputs in the dataset's label order. Download the "
            f"checkpoint first (huggingface-cli download {name}), or set teacher_labels"
        ) from err


def _normal(name: str) -> str:
    """Case and separators aside: ``NOT_ENTAILMENT``, ``not entailment`` and
    ``not-entailment`` are one name (``B-PER`` and ``b_per`` too)."""
    return re.sub(r"[\s_-]+", "_", str(name).strip().lower())


class _Read(NamedTuple):
    order: tuple[int, ...] | None  # None: the config does not fix it
    why: str  # why not
    names: list[str] | None  # the teacher's id2label in output order


def _from_config(config: dict[str, Any], names: tuple[str, ...], head: str) -> _Read:
    """The order the teacher's config gives, or why it gives none (``why`` is
    ``"outputs:<k>"`` for a head of another size ``k``, which the caller refuses)."""
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(head) for a in architectures):
        return _Read(
            None,
            f"its config.json names no {head.removeprefix('For')} head (architectures "
            f"{architectures}), so jaxprune puts a new, randomly initialised one on it",
            None,
        )
    table = config.get("id2label")
    if not isinstance(table, dict) or not table:
        return _Read(None, "its config.json has no id2label", None)
    try:
        by_id = {int(k): str(v) for k, v in table.items()}
    except (TypeError, ValueError):
        return _Read(None, f"its id2label {table} is not keyed by output index", None)
    if sorted(by_id) != list(range(len(by_id))):
        return _Read(None, f"its id2label {table} does not name outputs 0..k-1", None)
    own = [by_id[i] for i in range(len(by_id))]
    keys = [_normal(n) for n in own]
    if len(own) != len(names):
        return _Read(None, f"outputs:{len(own)}", own)
    if all(_GENERIC.fullmatch(k) for k in keys):
        return _Read(None, f"its id2label {own} holds transformers' generic names", own)
    wanted = [_normal(n) for n in names]
    if sorted(keys) != sorted(wanted) or len(set(keys)) != len(keys):
        return _Read(None, f"its id2label names {own} are not the dataset's", own)
    return _Read(tuple(keys.index(w) for w in wanted), "", own)


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(f"{i} {name}" for i, name in enumerate(names))


def _head(task: str) -> str:
    """The head class suffix a classifier of ``task`` has in transformers."""
    return _HEAD["token" if task == "conll2003" else "sequence"]


def _labels_for(
    task: str, given: tuple[int, ...] | None, field: str, role: str
) -> tuple[str, ...] | None:
    """The dataset's label names (None for a task without labels), with ``given`` (the
    job's ``field``, the ``role``'s output per label) checked against them.

    Raises:
      ValueError: ``given`` on a task without labels, or of another length.
    """
    names = dataset_labels(task)
    if names is None:
        if given is not None:
            raise ValueError(
                f"{field}={given!r}: a {task} {role} outputs {_outputs(task)}, not labels to "
                f"reorder; unset it (--set {field}=None)"
            )
        return None
    n = len(names)
    if given is not None and len(given) != n:
        raise ValueError(
            f"{field}={given!r} has {len(given)} entries, but {task} has {n} labels "
            f"({_listed(names)}): expected a permutation of 0..{n - 1}, entry i the {role}'s "
            f"output index for label i"
        )
    return names


def _agreeing(
    given: tuple[int, ...], read: _Read, field: str, who: str, task: str, listed: str
) -> tuple[int, ...]:
    """``given`` (the job's ``field``), refused where the checkpoint's names fix another."""
    if read.order is not None and read.order != given:
        raise ValueError(
            f"{field}={given!r} contradicts {who}, whose id2label {read.names} puts {task}'s "
            f"labels ({listed}) at outputs {read.order}; unset {field} or correct it"
        )
    return given


def teacher_order(job: Job, teacher: str | None = None) -> tuple[int, ...] | None:
    """For each of the dataset's labels, the index of the teacher's output that predicts it
    (the teacher's logits in the dataset's order are ``logits[..., order]``); None where no
    mapping applies: no teacher, or a task whose teacher outputs no labels (STS-B, SQuAD,
    data-to-text).

    ``teacher`` (default ``job.teacher``) classifies, so its order is, in turn:

    - under ``random_init``, ``job.teacher_labels`` or the identity: random weights have no
      label order, and a smoke run needs only the shapes;
    - ``job.teacher_labels``, which must agree with the teacher's ``id2label`` where its
      names are the dataset's (when the config cannot be read, it is used as it is);
    - the teacher's ``id2label`` when its names are the dataset's label names, compared
      without case and ``_`` / ``-`` / space differences (``ENTAILMENT`` is
      ``entailment``). No other aliases: a name that is not the dataset's does not say which
      label it means.

    Anything else is refused: transformers' generic ``LABEL_0..`` names (every TextAttack
    checkpoint), a config without ``id2label`` or without a classification head (whose head
    would be new and random), other names.

    Raises:
      ValueError: naming ``teacher_labels`` (on a task without labels, of the wrong length,
        against the teacher's names) or ``teacher`` (an order it does not determine, with
        the ``--set teacher_labels=...`` to add; a head of another size).
      FileNotFoundError: a Hub teacher's config.json is neither cached nor fetchable and
        ``teacher_labels`` is not set.
    """
    teacher = job.teacher if teacher is None else teacher
    given = job.teacher_labels
    if teacher is None:
        return None
    names = _labels_for(job.task, given, "teacher_labels", "teacher")
    if names is None:
        return None
    n, task, listed = len(names), job.task, _listed(names)
    if job.random_init:
        return given or tuple(range(n))
    try:
        config = teacher_config(teacher)
    except FileNotFoundError as err:
        if given is not None:  # checked against the config once the checkpoint is loaded
            return given
        raise FileNotFoundError(f"{err}: {_hint(task, n)}") from err
    read = _from_config(config, names, _head(task))
    if read.why.startswith("outputs:"):
        raise ValueError(
            f"teacher={teacher!r} has {read.why.removeprefix('outputs:')} outputs (id2label "
            f"{read.names}), but {task} has {n} labels ({listed}): it is not a {task} "
            f"classifier"
        )
    if read.why.startswith("its config.json names no"):  # whatever teacher_labels says
        raise ValueError(
            f"teacher={teacher!r}: {read.why}: distilling a random head trains the student "
            f"towards noise. Give a {task} classifier"
        )
    if given is not None:
        return _agreeing(given, read, "teacher_labels", f"teacher={teacher!r}", task, listed)
    if read.order is None:
        raise ValueError(
            f"teacher={teacher!r}: {read.why}, so nothing says which of its outputs is which "
            f"{task} label ({listed}), and distilling it in the wrong order trains the student "
            f"towards the wrong classes without an error. Set {_hint(task, n)}"
        )
    return read.order


def _hint(task: str, n: int, field: str = "teacher_labels", role: str = "teacher") -> str:
    """What to set when a checkpoint's order is unknown."""
    identity = ",".join(str(i) for i in range(n))
    textattack = (
        f"; TextAttack's MNLI checkpoints: --set {field}=1,2,0 (the PINS authors' permutation)"
        if task.startswith("mnli") or task == "ax"
        else " (TextAttack's GLUE checkpoints, trained on the glue datasets' label ids)"
    )
    return (
        f"{field}, for each {task} label in order the {role}'s output index: --set "
        f"{field}={identity} if it was trained on the dataset's label ids as they "
        f"are{textattack}"
    )


def model_order(job: Job) -> tuple[int, ...] | None:
    """For each of the dataset's labels, the index of the output of ``job.model``'s own
    classifier that predicts it, where its checkpoint carries one for the task (a fine-tuned
    model to prune, or the model ``jaxprune eval`` scores); None where no mapping applies:
    a task without labels, random weights, or a checkpoint without a classification head
    (a pre-trained body, whose new head learns the dataset's order).

    The order is found as :func:`teacher_order`'s, with ``job.model_labels`` in place of
    ``teacher_labels``: a trained head whose ``id2label`` does not name the dataset's labels
    (transformers' generic ``LABEL_0..``, other names) is refused unless ``model_labels``
    says which output is which, since training or scoring it as it is would read its
    classes in the wrong order without an error.

    Raises:
      ValueError: ``model_labels`` set where it orders nothing, of the wrong length or
        against the checkpoint's names; a head of another size; an order not determined.
    """
    given = job.model_labels
    names = _labels_for(job.task, given, "model_labels", "model")
    if names is None:
        return None
    n, task, listed = len(names), job.task, _listed(names)
    if job.random_init:
        return given
    try:
        config = teacher_config(job.model)
    except FileNotFoundError:  # loading the model says so; nothing to order before that
        return given
    read = _from_config(config, names, _head(task))
    if read.why.startswith("its config.json names no"):  # a new head
        if given is not None:
            raise ValueError(
                f"model_labels={given!r}: model={job.model!r} has no trained {task} head "
                f"({read.why}); unset it (--set model_labels=None)"
            )
        return None
    if read.why.startswith("outputs:"):
        raise ValueError(
            f"model={job.model!r} has a classifier of {read.why.removeprefix('outputs:')} "
            f"outputs (id2label {read.names}), but {task} has {n} labels ({listed}): it is "
            f"not a {task} classifier; start from its pre-trained body instead"
        )
    if given is not None:
        return _agreeing(given, read, "model_labels", f"model={job.model!r}", task, listed)
    if read.order is None:
        raise ValueError(
            f"model={job.model!r} carries a trained classifier, but {read.why}, so nothing "
            f"says which of its outputs is which {task} label ({listed}); scoring or "
            f"training it in the wrong order gives wrong results without an error. Set "
            f"{_hint(task, n, 'model_labels', 'model')}; or save it with "
            f"jaxprune.hf.save_pretrained(..., labels=...) naming its outputs"
        )
    return read.order


def reorder_outputs(model: Any, params: Any, order: tuple[int, ...]) -> Any:
    """``params`` with every leaf on ``model``'s ``classes`` axis (the output layer's kernel
    and bias) taken in ``order``: the model's logits become ``logits[..., order]``, exactly.
    The identity returns ``params`` unchanged.

    Raises:
      ValueError: the model has no ``classes`` leaf, or one of another size.
    """
    if order == tuple(range(len(order))):
        return params
    axes = logical_axes(model)
    index = jnp.asarray(order)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves, found = [], []
    for path, leaf in flat:
        spec: Any = axes
        for key in path:
            spec = spec[getattr(key, "key", getattr(key, "idx", None))]
        dims = [i for i, name in enumerate(tuple(spec)) if name == "classes"]
        for dim in dims:
            if leaf.shape[dim] != len(order):
                raise ValueError(
                    f"{jax.tree_util.keystr(path)} has {leaf.shape[dim]} "
                    f"outputs; its label order has {len(order)}"
                )
            leaf = jnp.take(leaf, index, axis=dim)
        found += dims
        leaves.append(leaf)
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no parameter on a 'classes' axis (an output "
            f"layer) to put in the dataset's label order"
        )
    return jax.tree_util.tree_unflatten(treedef, leaves)


def name_outputs(folder: pathlib.Path, task: str) -> None:
    """Writes the dataset's label names as the ``id2label`` / ``label2id`` of an exported
    classifier's config.json: a model jaxprune trained predicts the dataset's label ids, and
    a later job that distils from it reads them (:func:`teacher_order`)."""
    names = dataset_labels(task)
    path = pathlib.Path(folder) / "config.json"
    if names is None or not path.is_file():
        return
    config = json.loads(path.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(names)}
    config["label2id"] = {name: i for i, name in enumerate(names)}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def resume_defaults(job: Job, order: tuple[int, ...] | None) -> dict[str, Any]:
    """:data:`~jaxprune.recipes.job.DEFAULTS` for resuming a run folder, with
    ``teacher_labels`` at what a folder written before the field existed did: it distilled
    the teacher's outputs as they came, the identity. Such a run resumes under a job whose
    ``order`` (:func:`teacher_order`) is the identity or None, and is refused where it is
    another permutation: its targets were in the wrong order (TextAttack's MNLI)."""
    if order is None or order == tuple(range(len(order))):
        return {**DEFAULTS, "teacher_labels": job.teacher_labels}
    return {**DEFAULTS, "teacher_labels": list(range(len(order)))}


__all__ = [
    "dataset_labels",
    "model_order",
    "name_outputs",
    "reorder_outputs",
    "resume_defaults",
    "teacher_config",
    "teacher_order",
]
