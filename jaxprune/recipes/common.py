"""What every recipe shares: the method, the run facts, training with the engine, export.

A recipe (GLUE, SQuAD, NER, data-to-text) supplies the model, a train
:class:`~jaxprune.data.Batcher`, an ``evaluate(params) -> metrics`` and the loss kind;
:func:`train_and_export` does the rest and writes ``run_dir/result.json``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import datasets
import jax
from flax import nnx

from jaxprune import data, hf, methods, paths, train
from jaxprune.masks import sparsity_report
from jaxprune.models import (
    DebertaV2ForTask,
    EncoderForTask,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    ModernBertForTask,
    logical_axes,
)
from jaxprune.recipes import labels
from jaxprune.recipes.job import RESUMABLE_CHANGES, Job
from jaxprune.train.loop import clear_run
from jaxprune.train.tasks import ModelFn

T = TypeVar("T")

log = logging.getLogger(__name__)

Evaluate = Callable[[Any], dict]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A task set up for a job: what :func:`train_and_export` needs.

    Attributes:
      model, params, tokenizer: from :func:`jaxprune.hf.load_pretrained`.
      train_batches: the training batches (one epoch per call); None when only evaluating.
      evaluate: ``forward -> (params -> dev metrics with a "primary" key)``.
      kind: the loss kind (classification, regression, token, qa, lm).
      load_teacher: ``folder -> (teacher model, teacher params)``, the params' outputs in
        the dataset's label order (:func:`load_model` with ``teacher``).
    """

    model: Any
    params: Any
    tokenizer: Any
    train_batches: data.Batcher | None
    evaluate: Callable[[ModelFn], Evaluate]
    kind: str
    load_teacher: Callable[[str], tuple[Any, Any]]

    def dev_metrics(self, params: Any = None) -> dict:
        """Dev metrics of ``params`` (default: the loaded ones)."""
        forward = train.model_fn(self.model)
        return self.evaluate(forward)(self.params if params is None else params)


@dataclasses.dataclass(frozen=True)
class Family:
    """What the recipes need to know of a model family (:data:`FAMILIES`).

    Attributes:
      name: for messages.
      decoder: a causal LM (data-to-text), else an encoder (GLUE, SQuAD, NER).
      kernels: the default prunable preset: the family's matrices, weights only.
      kernels_and_biases: the same with their biases, for methods that rank biases too
        (PINS, PLATON).
      positions: the model's config -> how many positions a row may use.
      head_params: the task head that frozen-weight methods (SMP) still train, where the
        methods' default (``classifier``, ``pre_classifier``, ``qa_outputs``) misses part
        of a head the checkpoint does not hold; None: the default.
      refuses: ``(objective, why)``: method objectives that cannot work on the family.
    """

    name: str
    decoder: bool
    kernels: str
    kernels_and_biases: str
    positions: Callable[[Any], int]
    head_params: str | None = None
    refuses: tuple[tuple[str, str], ...] = ()


_CAUSAL = (
    (
        "sparsebert",
        "sparsebert's attention-score MSE needs the attention scores, which a decoder's "
        "forward does not return, and its soft cross-entropy scores one class distribution "
        "per example (an encoder's task head)",
    ),
    (
        "cross_correlation",
        "its cross-correlation compares every example's first-token final state (an "
        "encoder's [CLS]); in a causal decoder that state has seen only the first token",
    ),
)

#: model class -> :class:`Family`: every model :func:`jaxprune.hf.load_pretrained` builds
#: (:data:`jaxprune.hf.ENCODERS`, :data:`jaxprune.hf.DECODERS`).
FAMILIES: dict[type, Family] = {
    EncoderForTask: Family(
        "BERT-family",
        False,
        paths.BERT_ENCODER_KERNELS,
        paths.BERT_ENCODER_KERNELS_AND_BIASES,
        # RoBERTa's positions start after its padding id
        lambda cfg: (
            cfg.max_position_embeddings - (cfg.pad_token_id + 1 if cfg.arch == "roberta" else 0)
        ),
    ),
    DebertaV2ForTask: Family(
        "DeBERTa-v2/v3",
        False,
        paths.DEBERTA_KERNELS,
        paths.DEBERTA_KERNELS_AND_BIASES,
        lambda cfg: cfg.max_position_embeddings,
        # its sequence head's ContextPooler is new on a pre-trained checkpoint, as the
        # classifier is (BERT's pooler is pre-trained)
        head_params=r"^(pooler|classifier|qa_outputs)(/|$)",
    ),
    ModernBertForTask: Family(
        "ModernBERT",
        False,
        paths.MODERNBERT_KERNELS,
        paths.MODERNBERT_KERNELS_AND_BIASES,
        lambda cfg: cfg.max_position_embeddings,
    ),
    GPT2LMHeadModel: Family(
        "GPT-2",
        True,
        paths.GPT2_KERNELS,
        paths.GPT2_KERNELS_AND_BIASES,
        lambda cfg: cfg.n_positions,
        refuses=_CAUSAL,
    ),
    LlamaForCausalLM: Family(
        "Llama-family (Llama, Qwen2, Mistral)",
        True,
        paths.LLAMA_KERNELS,
        paths.LLAMA_KERNELS_AND_BIASES,
        lambda cfg: cfg.max_position_embeddings,
        refuses=_CAUSAL,
    ),
}


def family_of(model: Any) -> Family:
    """The :class:`Family` of a jaxprune model.

    Raises:
      TypeError: a model class no recipe knows.
    """
    found = next((f for cls, f in FAMILIES.items() if isinstance(model, cls)), None)
    if found is None:
        raise TypeError(f"no recipe family for a {type(model).__name__}")
    return found


def family_of_type(model_type: str | None) -> Family | None:
    """The :class:`Family` of a transformers ``model_type``; None for one jaxprune does not
    build."""
    entry = hf.DECODERS.get(model_type or "") or hf.ENCODERS.get(model_type or "")
    return None if entry is None else FAMILIES.get(entry.model)


def check_family(method: Any, family: Family, job: Job) -> None:
    """ValueError when ``method`` (built for ``job``) cannot work on ``family``."""
    why = dict(family.refuses).get(str(getattr(method, "objective", "")))
    if why is not None:
        raise ValueError(
            f"method={job.method!r} cannot prune a {family.name} model ({job.model}): {why}"
        )


def method_for(job: Job, model: Any = None, *, family: Family | None = None) -> Any:
    """The job's method (``dense``: magnitude at sparsity 0 that never updates its masks).

    On a ``model`` (or a ``family``, :data:`FAMILIES`) it prunes the family's matrices
    unless ``prunable`` is set, with their biases where the preset ranks biases too (as PINS
    and PLATON do); frozen-weight methods (SMP) train the family's task head (none on a
    causal LM, whose output layer is pre-trained). A method the family cannot run is
    refused (:func:`check_family`).
    """
    if family is None and model is not None:
        family = family_of(model)
    options = job.options
    preset = methods.get("magnitude" if job.method == "dense" else job.method)
    if family is not None:
        if "prunable" not in options:
            both = getattr(preset, "prunable", None) == paths.BERT_ENCODER_KERNELS_AND_BIASES
            options["prunable"] = family.kernels_and_biases if both else family.kernels
        if getattr(preset, "train_weights", True) is False:
            if family.decoder:  # SMP: no new head on an LM
                options.setdefault("train_head", False)
            elif family.head_params is not None:
                options.setdefault("head_params", family.head_params)
    if job.method == "dense":
        method = methods.get("magnitude", sparsity=0.0, update_every=10**9, **options)
    elif methods.get(job.method).sparsity is None:  # soft movement: set by its regulariser
        method = methods.get(job.method, **options)
    else:
        method = methods.get(job.method, sparsity=job.sparsity, **options)
    if family is not None:
        check_family(method, family, job)
    return method


def load_model(
    job: Job, name: str, *, head: str, num_labels: int = 2, teacher: bool = False
) -> hf.Pretrained:
    """``name`` (the job's model, or with ``teacher`` its teacher) with ``head``: its
    checkpoint, or random weights of its architecture when ``job.random_init``; the tokenizer
    from ``job.tokenizer`` when set (a teacher's is not loaded under ``random_init``).

    A classifying teacher's output layer is put in the dataset's label order here, the one
    place every recipe's teacher passes (:func:`jaxprune.recipes.labels.teacher_order`; a
    ValueError when the order is not determined), in its params and in the model; so is the
    model's own trained classifier (:func:`jaxprune.recipes.labels.model_order`).
    """
    seed = 0 if teacher else job.seed
    if job.random_init:
        words = None if teacher else (job.tokenizer or name)
        loaded = hf.random_pretrained(
            name, head=head, num_labels=num_labels, seed=seed, tokenizer=words
        )
    else:
        loaded = hf.load_pretrained(
            name, head=head, num_labels=num_labels, seed=seed, tokenizer=job.tokenizer
        )
    order = labels.teacher_order(job, name) if teacher else labels.model_order(job)
    if order is None:
        return loaded
    params = labels.reorder_outputs(loaded.model, loaded.params, order)
    state = nnx.state(loaded.model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(loaded.model, state)
    return hf.Pretrained(loaded.model, params, loaded.tokenizer)


def subset(dataset: datasets.Dataset, size: int | None, seed: int) -> datasets.Dataset:
    """A fixed seeded subset of ``size`` rows (all rows when None or larger)."""
    if size is None or size >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(size))


def model_inputs(batch: dict) -> dict:
    """The arrays the jitted step sees (drops host-side bookkeeping)."""
    return {k: v for k, v in batch.items() if k != "index"}


def every_row(rows: Sequence[T | None], what: str) -> list[T]:
    """``rows``, filled by the eval batches; a ValueError names rows the batches missed."""
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        raise ValueError(f"no {what} for {len(missing)} of {len(rows)} rows: {missing[:5]}")
    return [row for row in rows if row is not None]


def dev_split(job: Job, split: str = "validation") -> datasets.Dataset:
    """The job's evaluation rows (a seeded ``eval_subset`` of them when set)."""
    return subset(data.load(job.task, split, job.data_dir), job.eval_subset, job.seed)


def train_split(job: Job) -> datasets.Dataset:
    """The job's training rows (a seeded ``train_subset`` of them when set)."""
    return subset(data.load(job.task, "train", job.data_dir), job.train_subset, job.seed)


def training_batches(
    job: Job,
    rows: datasets.Dataset,
    encode: Callable[[datasets.Dataset], Any],
    pad_id: int,
    *,
    pack: bool = False,
) -> data.Batcher:
    """Shuffled batches of ``job.batch_size`` (global) of the encoded training ``rows``,
    packed when ``pack``; this host's rows only.

    Raises:
      ValueError: the rows make no full batch.
    """
    encoded = encode(rows)
    if len(encoded) < job.batch_size:
        raise ValueError(
            f"{job.task}'s training set gives {len(encoded)} examples, fewer than one batch "
            f"of batch_size={job.batch_size}"
        )
    return data.Batcher(
        encoded,
        job.batch_size,
        seed=job.seed,
        pad_id=pad_id,
        drop_last=True,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        pack=pack,
    )


def check_length(job: Job, model: Any) -> None:
    """ValueError when ``job.max_length`` tokens do not fit the model's position table
    (positions past it would read NaN embeddings), per :attr:`Family.positions`."""
    limit = family_of(model).positions(model.cfg)
    if job.max_length > limit:
        raise ValueError(
            f"max_length={job.max_length} exceeds the {limit} positions of {job.model}"
        )


def data_axis(batch_size: int, model_parallel: int, devices: int) -> int:
    """The size of the mesh's data axis over ``devices``.

    Raises:
      ValueError: ``model_parallel`` does not divide the devices, or the global batch does
        not split evenly over the data axis.
    """
    if devices % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} does not divide the {devices} devices")
    size = devices // model_parallel
    if batch_size % size:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by the mesh's data axis ({size} of "
            f"{devices} devices with model_parallel={model_parallel}): use a multiple of {size}"
        )
    return size


def layout_for(job: Job, model: Any, params: Any) -> tuple[train.Sharding, Any]:
    """The (data, model) mesh over every device and the params' shardings."""
    data_axis(job.batch_size, job.model_parallel, jax.device_count())
    mesh = train.make_mesh(-1, job.model_parallel)
    layout = train.Sharding(mesh, fsdp=job.fsdp, shard_state=job.shard_state)
    return layout, layout.params(params, logical_axes(model))


def has_scores(trainable: Any) -> bool:
    return isinstance(trainable, dict) and set(trainable) == {"params", "scores"}


def train_and_export(
    job: Job, run_dir: str | pathlib.Path, task: Prepared, *, restart: bool = False
) -> dict:
    """Trains ``job`` on the prepared ``task``; writes ``run_dir/{result.json, export/}``.
    Resumes a checkpoint of the same job in ``run_dir`` (see :func:`jaxprune.recipes.run`);
    ``restart``: deletes the earlier run's files first."""
    run_dir = pathlib.Path(run_dir)
    model, params, tokenizer, kind = task.model, task.params, task.tokenizer, task.kind
    train_batches = task.train_batches
    if train_batches is None:
        raise ValueError("train_and_export needs a task prepared with train=True")
    method = method_for(job, model)
    steps = job.total_steps(len(train_batches))
    run = methods.Run(
        total_steps=steps,
        learning_rate=job.learning_rate,
        warmup_steps=int(job.warmup_ratio * steps),
        weight_decay=job.weight_decay,
        task=kind,
    )
    forward = train.model_fn(model)
    dense_teacher, teacher_forward, order = None, None, None
    if method.teacher == "dense" and job.teacher is None:
        raise ValueError(f"{job.method} distils from a fine-tuned dense teacher: set teacher=")
    if method.teacher != "none" and job.teacher is not None:  # PINS may start from one too
        # outputs in the dataset's label order (load_model), so every loss sees them so
        teacher_model, dense_teacher = task.load_teacher(job.teacher)
        teacher_forward = train.model_fn(teacher_model)
        order = labels.teacher_order(job)
    tx = method.optimizer(run, params)
    loss = method.loss(forward, run, teacher_forward)
    layout, param_sh = layout_for(job, model, params)
    state = train.init_state(method.init(params), tx, seed=job.seed)
    state_sh, update_sh = train.state_shardings(layout, state, params, param_sh)
    state = jax.device_put(state, state_sh)
    step = jax.jit(
        train.train_step_fn(loss, tx, update_sharding=update_sh),
        out_shardings=(state_sh, layout.replicated),
        donate_argnums=0,
    )
    teacher_sh = layout.for_state(param_sh, params)  # split over `data` with shard_state

    def placed_teacher(teacher: Any) -> Any:
        if teacher is None:
            return None
        return jax.device_put(teacher, layout.like_params(teacher, params, teacher_sh))

    def update_teacher(state: Any, teacher: Any, dev: dict | None) -> Any:
        return placed_teacher(method.update_teacher(state, teacher, dev))

    teacher = placed_teacher(method.initial_teacher(params, dense_teacher))
    head_forward = getattr(method, "head_forward", None)  # learned-score methods
    evaluate_params = task.evaluate(head_forward(forward, run) if head_forward else forward)

    def evaluate_trainable(trainable: Any) -> dict:  # learned scores: {"params", "scores"}
        return evaluate_params(
            method.eval_params(trainable) if has_scores(trainable) else trainable
        )

    def stream(epoch: int, start: int):  # batching and placement run a step ahead
        batches = itertools.islice(train_batches(epoch), start, None)
        return data.prefetch(
            jax.make_array_from_process_local_data(layout.batch, model_inputs(batch))
            for batch in batches
        )

    if restart:
        clear_run(run_dir, ("result.json", "export"))
    started = time.time()
    state, _ = train.fit(
        run_dir=run_dir,
        config=train.LoopConfig(
            steps=steps,
            steps_per_epoch=len(train_batches),
            log_every=max(1, steps // 50),
            eval_every=job.eval_every,
            checkpoint_every=max(50, steps // 10),
            best_metric=None,
            masks_every=job.masks_every,
        ),
        state=state,
        train_step=step,
        batches=stream,
        evaluate=evaluate_trainable if job.eval_every else None,
        teacher=teacher,
        update_teacher=update_teacher if method.teacher == "self" else None,
        resolved_config=job.as_dict(),
        export=lambda trainable, opt_state: method.export(trainable, opt_state, run),
        may_differ=RESUMABLE_CHANGES,
        defaults=labels.resume_defaults(job, order),
        restart=restart,
    )
    pruned, masks = method.export(state.params, state.opt_state, run)
    pruned = jax.device_get(pruned)
    dev = evaluate_params(pruned)
    report = sparsity_report(pruned, masks if job.method != "dense" else None)
    target = method.sparsity if job.method != "dense" else None
    if target is not None and report.sparsity < target - 0.005:
        log.warning(
            "%s: sparsity %.4f is below the target %.4f: the run ended before a mask update "
            "reached it (its last update is due before the schedule's end); train longer or "
            "update masks more often (method_options.update_every)",
            run_dir,
            report.sparsity,
            target,
        )
    hf.save_pretrained(model, pruned, run_dir / "export", tokenizer=tokenizer)
    labels.name_outputs(run_dir / "export", job.task)  # what a later teacher_order reads
    result = {
        "job": job.as_dict(),
        "steps": steps,
        "dev": dict(dev),
        "sparsity": report.sparsity,
        "target_sparsity": target,
        "seconds": round(time.time() - started, 1),
        "export": str(run_dir / "export"),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    log.info("%s: dev %s, sparsity %.4f", run_dir, dev, report.sparsity)
    return result


__all__ = [
    "FAMILIES",
    "Evaluate",
    "Family",
    "Prepared",
    "check_family",
    "check_length",
    "data_axis",
    "dev_split",
    "every_row",
    "family_of",
    "family_of_type",
    "has_scores",
    "layout_for",
    "load_model",
    "method_for",
    "model_inputs",
    "subset",
    "train_and_export",
    "train_split",
    "training_batches",
]
