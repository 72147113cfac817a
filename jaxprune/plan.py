"""Plan a run at its real shapes without weights or an accelerator: compile, size, project.

    jaxprune plan --config experiments/configs/pins_glue.py:rte-80-pins --devices 8 --layout dp
    jaxprune plan --config experiments/configs/smp_table1.py --devices 8 32 --layout dp fsdp zero \
        --out experiments/results/scale

For a :class:`~jaxprune.recipes.Job`, :func:`plan` builds the model at its published
architecture (:mod:`jaxprune.architectures`, or a local folder's config.json) as abstract
arrays, the job's method (loss, teacher, masked optimizer, schedules), and lowers and
compiles its real jitted train step and eval forward for a mesh of simulated CPU devices
(``--xla_force_host_platform_device_count``). It reports, per device:

- memory from the compiled executable (arguments, outputs, temporaries, the peak), and the
  train state broken down by kind (params, Adam moments, masks, criterion / score state,
  teacher) from the arrays' shardings;
- FLOPs and bytes accessed per step from XLA's cost analysis, and the step and whole-run
  time projected on the chips of :mod:`jaxprune.accelerators` at a stated utilisation;
- whether the peak fits each chip, and the largest per-device batch that does (the peak is
  affine in the batch: a second compile at twice the batch gives the slope);
- compile time.

The figures are XLA:CPU's: the state and argument sizes are exact on any backend; the
temporaries (activations kept for the backward pass, fusion buffers) are a projection,
since another backend's compiler fuses and schedules differently. Packed GLUE batches
(``pack=True``) are planned as unpacked rows of ``max_length`` (as many tokens a step).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from jaxprune import accelerators, architectures, hf, methods, paths, train
from jaxprune.data.conll import NER
from jaxprune.metrics import glue_task
from jaxprune.models import logical_axes
from jaxprune.recipes import common, family
from jaxprune.recipes.job import Job

HEADS = {
    "glue": "sequence-classification",
    "squad": "question-answering",
    "ner": "token-classification",
    "d2t": "causal-lm",
}

#: Published training-set sizes (examples; SQuAD: its 384-token windows at stride 128, which
#: the schedule counts), for the number of steps of a run given in epochs.
TRAIN_EXAMPLES = {
    "mnli": 392702,
    "qqp": 363846,
    "qnli": 104743,
    "sst2": 67349,
    "cola": 8551,
    "stsb": 5749,
    "mrpc": 3668,
    "rte": 2490,
    "squad": 88641,
    "conll2003": 14041,
    "e2e": 42061,
    "webnlg": 18102,
    "dart": 62659,
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A mesh of ``data x model`` devices; ``fsdp``: params sharded over ``data`` too;
    ``shard_state``: params replicated, their optimizer / pruning state and the teacher
    sharded over ``data`` (ZeRO-1 style, ``train.Sharding(shard_state=True)``)."""

    data: int
    model: int
    fsdp: bool
    shard_state: bool = False

    @property
    def devices(self) -> int:
        return self.data * self.model

    @property
    def name(self) -> str:
        kind = "fsdp" if self.fsdp else "zero" if self.shard_state else "dp"
        return f"{kind}{self.data}" + (f"x{self.model}" if self.model > 1 else "")


def layout_for(job: Job, devices: int, fsdp: bool, shard_state: bool = False) -> Layout:
    """The layout of ``job`` on ``devices``: the data axis as large as the global batch
    allows (it must divide it), the rest tensor-parallel (``model``), at least
    ``job.model_parallel``."""
    data = math.gcd(job.batch_size, devices // math.gcd(devices, job.model_parallel))
    return Layout(data, devices // data, fsdp, shard_state)


def program_key(job: Job) -> tuple:
    """What decides the compiled program of ``job``'s steps: two jobs with equal keys differ
    only in numbers the program holds as constants (sparsity, learning rates, schedule
    steps, seed, epochs) or in names, so they share one plan."""
    numeric = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731

    def shape_options(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(shape_options(v) for v in value if not numeric(v))
        return value

    options = tuple((k, shape_options(v)) for k, v in job.method_options if not numeric(v))
    teacher = None if job.teacher is None else architectures.base_architecture(job.teacher)
    head = (family(job.task), num_labels(job.task))
    return (job.model, head, job.method, options, job.batch_size, job.max_length,
            job.eval_batch_size, teacher or job.teacher)  # fmt: skip


def slope_key(job: Job) -> tuple:
    """What decides the memory an extra example adds (:data:`SLOPE_BATCHES`): the program
    but for the batch size and the label count."""
    key = program_key(job)
    return (key[0], key[1][0], *key[2:4], *key[5:])


def num_labels(task: str) -> int:
    kind = family(task)
    if kind == "glue":
        return glue_task(task).num_classes or 1
    return len(NER) if kind == "ner" else 2


def loss_kind(task: str) -> str:
    kind = family(task)
    if kind == "glue":
        return "classification" if glue_task(task).num_classes else "regression"
    return {"squad": "qa", "ner": "token", "d2t": "lm"}[kind]


def abstract_model(name: str, task: str, seed: int = 0) -> tuple[nnx.Module, Any]:
    """``(model, params)`` of ``name``'s architecture with ``task``'s head, as shapes only."""
    cfg = hf.config_of(name)
    model = nnx.eval_shape(
        lambda: hf.build(cfg, head=HEADS[family(task)], num_labels=num_labels(task), seed=seed)
    )
    return model, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def batch_shapes(job: Job, model: nnx.Module, rows: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The training batch of ``rows`` examples at ``job.max_length`` as the recipes' batcher
    yields it (without ``index``): token arrays ``[rows, L]``, per-example labels ``[rows]``,
    ``valid`` bool ``[rows]``."""
    kind, length = family(job.task), job.max_length
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)
    per_row = jax.ShapeDtypeStruct((rows,), jnp.int32)
    out = {"input_ids": tokens, "attention_mask": tokens}
    if kind != "d2t" and getattr(getattr(model, "cfg", None), "type_vocab_size", 0) > 1:
        out["token_type_ids"] = tokens
    if kind == "glue":
        labels = jnp.int32 if loss_kind(job.task) == "classification" else jnp.float32
        out["labels"] = jax.ShapeDtypeStruct((rows,), labels)
    elif kind == "squad":
        out.update(start_positions=per_row, end_positions=per_row)
    else:
        out["labels"] = tokens
    out["valid"] = jax.ShapeDtypeStruct((rows,), jnp.bool_)
    return out


def total_steps(job: Job) -> int:
    """``job.steps``, or its epochs over :data:`TRAIN_EXAMPLES` in full batches."""
    if job.steps is not None:
        return job.steps
    if job.train_subset is not None:
        rows = job.train_subset
    elif job.task in TRAIN_EXAMPLES:
        rows = TRAIN_EXAMPLES[job.task]
    else:
        raise ValueError(f"no training-set size known for {job.task}: set steps=")
    return job.total_steps(max(1, rows // job.batch_size))


@dataclasses.dataclass(frozen=True)
class Executable:
    """What XLA says of one compiled per-device program (bytes, FLOPs, seconds)."""

    argument: int
    output: int
    alias: int
    temp: int
    flops: float
    bytes_accessed: float
    compile_seconds: float
    codegen: str = "full"  # "fast": LLVM at -O0 (FAST_CODEGEN); the other figures are equal

    @property
    def peak(self) -> int:
        """Arguments + outputs (less those donated into) + temporaries."""
        return self.argument + self.output - self.alias + self.temp


#: XLA options for ``plan(fast_codegen=True)``: the CPU backend's LLVM passes at -O0. Memory,
#: FLOPs and bytes come from the optimised HLO and its buffer assignment, before LLVM, so they
#: are unchanged (checked in tests/test_plan.py); the compile takes about half the time.
FAST_CODEGEN = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _executable(lowered: Any, fast_codegen: bool = False) -> Executable:
    start = time.perf_counter()
    compiled = lowered.compile(compiler_options=FAST_CODEGEN if fast_codegen else None)
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return Executable(
        argument=memory.argument_size_in_bytes,
        output=memory.output_size_in_bytes,
        alias=memory.alias_size_in_bytes,
        temp=memory.temp_size_in_bytes,
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        compile_seconds=seconds,
        codegen="fast" if fast_codegen else "full",
    )


def _placed(tree: Any, shardings: Any) -> Any:
    """Shape structs of ``tree`` carrying ``shardings`` (a tree like it, or one for all)."""
    if isinstance(shardings, NamedSharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def per_device_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of ``tree`` (shape structs) laid out by ``shardings``."""
    sizes = jax.tree.map(
        lambda x, s: math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize,
        tree,
        shardings,
    )
    return int(sum(jax.tree.leaves(sizes)))


def _kind(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "params":
        return "scores" if len(parts) > 1 and parts[1] == "scores" else "params"
    for kind, names in (
        ("adam", ("mu", "nu")),
        ("masks", ("masks",)),
        ("criterion", ("criterion",)),
    ):
        if any(name in parts for name in names):
            return kind
    return "other"


def state_breakdown(state: Any, shardings: Any) -> dict[str, int]:
    """Per-device bytes of a train state by kind: params, scores (learned-score methods),
    adam (moments), masks, criterion, other (steps, counters, PRNG key)."""
    out = dict.fromkeys(("params", "scores", "adam", "masks", "criterion", "other"), 0)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for (keypath, leaf), sharding in zip(flat, jax.tree.leaves(shardings), strict=True):
        nbytes = math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        out[_kind(paths.path_str(keypath))] += nbytes
    return out


class PlainFineTuning:
    """Dense fine-tuning as any user writes it (AdamW, clipping, the task loss; no masks):
    the reference a method's memory is compared with."""

    name, teacher, head_forward = "fine-tuning", "none", None

    def init(self, params: Any) -> Any:
        return params

    def optimizer(self, run: methods.Run, params: Any) -> optax.GradientTransformation:
        del params
        return run.clipped(optax.adamw(run.lr_schedule(), eps=1e-8, weight_decay=run.weight_decay))

    def loss(self, forward: Any, run: methods.Run, teacher_forward: Any = None) -> Any:
        return train.supervised_loss(forward, run.task)

    def initial_teacher(self, params: Any, dense_teacher: Any = None) -> None:
        return None


#: ``Job.method`` of :class:`PlainFineTuning` in a plan (no recipe runs it: the recipes'
#: ``dense`` is a masked optimizer that never prunes).
FINE_TUNING = "fine-tuning"


def fine_tuning(job: Job) -> Job:
    """Plain dense fine-tuning of ``job``'s model on its task at its batch and length."""
    return dataclasses.replace(
        job, method=FINE_TUNING, method_options=(), teacher=None, sparsity=0.0
    )


#: Examples per device of the two extra compiles that measure how the peak grows with the
#: batch; large enough that activations, not the optimizer update, set the peak.
SLOPE_BATCHES = (32, 64)


@dataclasses.dataclass(frozen=True)
class Plan:
    """One job's program on one layout (see the module docstring); bytes are per device."""

    job: Job
    layout: Layout
    steps: int
    train: Executable
    slope: tuple[Executable, Executable] | None  # the step at SLOPE_BATCHES per device
    eval: Executable
    state: dict[str, int]
    teacher: int

    @property
    def per_device_batch(self) -> float:
        return self.job.batch_size / self.layout.data

    @property
    def bytes_per_example(self) -> float | None:
        """Peak bytes one more example per device adds at large batches, where the
        activations kept for the backward pass set the peak (None without the slope)."""
        if self.slope is None:
            return None
        small, large = SLOPE_BATCHES
        return (self.slope[1].peak - self.slope[0].peak) / (large - small)

    def step_seconds(self, chip: str, utilization: float) -> float:
        t = self.train
        return accelerators.step_seconds(
            t.flops, t.bytes_accessed, accelerators.ACCELERATORS[chip], utilization
        )

    def largest_batch(self, chip: str) -> int | None:
        """Most examples per device whose step fits ``chip`` (None without the slope)."""
        per_example = self.bytes_per_example
        if self.slope is None or per_example is None:
            return None
        chip_spec = accelerators.ACCELERATORS[chip]
        if not accelerators.fits(self.train.peak, chip_spec):
            return 0
        fixed = self.slope[0].peak - per_example * SLOPE_BATCHES[0]
        return accelerators.largest_batch(fixed, per_example, chip_spec)


class _Program(NamedTuple):
    compile_train: Callable[[int], Executable]  # rows -> the train step at that batch
    compile_eval: Callable[[], Executable]
    state: dict[str, int]
    teacher: int


def _method(job: Job, model: nnx.Module) -> Any:
    return PlainFineTuning() if job.method == FINE_TUNING else common.method_for(job, model)


def _program(
    job: Job, layout: Layout, devices: Sequence[jax.Device], fast_codegen: bool
) -> _Program:
    model, params = abstract_model(job.model, job.task, job.seed)
    method = _method(job, model)
    steps = total_steps(job)
    run = methods.Run(
        total_steps=steps,
        learning_rate=job.learning_rate,
        warmup_steps=int(job.warmup_ratio * steps),
        weight_decay=job.weight_decay,
        task=loss_kind(job.task),
    )
    forward = train.model_fn(model)
    dense_teacher, teacher_forward = None, None
    if method.teacher == "dense" and job.teacher is None:
        raise ValueError(f"{job.method} distils from a fine-tuned dense teacher: set teacher=")
    if method.teacher != "none" and job.teacher is not None:
        teacher_model, dense_teacher = abstract_model(job.teacher, job.task)
        teacher_forward = train.model_fn(teacher_model)
    tx = method.optimizer(run, params)
    loss = method.loss(forward, run, teacher_forward)
    mesh = train.make_mesh(layout.data, layout.model, devices=devices[: layout.devices])
    sharding = train.Sharding(mesh, fsdp=layout.fsdp, shard_state=layout.shard_state)
    param_sh = sharding.params(params, logical_axes(model))
    state = jax.eval_shape(lambda p: train.init_state(method.init(p), tx, seed=job.seed), params)
    state_sh, update_sh = train.state_shardings(sharding, state, params, param_sh)
    teacher = jax.eval_shape(method.initial_teacher, params, dense_teacher)
    teacher_sh = sharding.like_params(teacher, params, sharding.for_state(param_sh, params))
    step = jax.jit(
        train.train_step_fn(loss, tx, update_sharding=update_sh),
        out_shardings=(state_sh, sharding.replicated),
        donate_argnums=0,
    )

    def compile_train(rows: int) -> Executable:
        batch = _placed(batch_shapes(job, model, rows), _batch_sharding(sharding, rows))
        args = (_placed(state, state_sh), batch, _placed(teacher, teacher_sh))
        return _executable(step.lower(*args), fast_codegen)

    head_forward = getattr(method, "head_forward", None)
    eval_forward = head_forward(forward, run) if head_forward else forward
    rows = job.eval_batch_size
    eval_batch = _placed(batch_shapes(job, model, rows), _batch_sharding(sharding, rows))
    evaluate = jax.jit(lambda p, b: eval_forward(p, b).logits)
    return _Program(
        compile_train,
        lambda: _executable(evaluate.lower(_placed(params, param_sh), eval_batch), fast_codegen),
        state_breakdown(state, state_sh),
        per_device_bytes(teacher, teacher_sh),
    )


def _checked_devices(job: Job, layout: Layout, devices: Any) -> list[jax.Device]:
    devices = list(jax.devices("cpu") if devices is None else devices)
    if len(devices) < layout.devices:
        raise ValueError(
            f"layout {layout.name} needs {layout.devices} devices, JAX has {len(devices)}: "
            f"call jax.config.update('jax_num_cpu_devices', {layout.devices}) before JAX "
            f"starts (jaxprune plan does)"
        )
    if job.batch_size % layout.data:
        raise ValueError(f"batch_size={job.batch_size} does not split over data={layout.data}")
    return devices


def slope_executables(
    job: Job,
    layout: Layout,
    devices: Sequence[jax.Device] | None = None,
    *,
    fast_codegen: bool = False,
) -> tuple[Executable, Executable]:
    """The train step of ``job`` compiled at :data:`SLOPE_BATCHES` examples per device only
    (:attr:`Plan.slope`, for a plan made without it); arguments as :func:`plan`."""
    program = _program(job, layout, _checked_devices(job, layout, devices), fast_codegen)
    small, large = (program.compile_train(n * layout.data) for n in SLOPE_BATCHES)
    return small, large


def plan(
    job: Job,
    layout: Layout,
    devices: Sequence[jax.Device] | None = None,
    *,
    slope: bool | tuple[Executable, Executable] = True,
    fast_codegen: bool = False,
) -> Plan:
    """Compiles ``job``'s train step (and eval forward) on ``layout`` without weights.

    Args:
      job: the run; its model is a published architecture name or a local folder;
        ``method=FINE_TUNING`` plans :class:`PlainFineTuning`.
      layout: the mesh (:func:`layout_for`).
      devices: at least ``layout.devices`` devices (default: the CPU devices).
      slope: also compile the train step at :data:`SLOPE_BATCHES` examples per device, for
        the largest batch that fits; or those two executables, from a plan of a job with
        the same :func:`slope_key` on the same layout.
      fast_codegen: compile with :data:`FAST_CODEGEN` (same figures, about half the
        compile time; the compile seconds are then those of the fast build).

    Raises:
      ValueError: too few devices, a batch the data axis does not divide, or a job that
        cannot be built (as ``jaxprune train`` says).
    """
    program = _program(job, layout, _checked_devices(job, layout, devices), fast_codegen)
    train_step = program.compile_train(job.batch_size)
    if slope is True:
        small, large = (program.compile_train(n * layout.data) for n in SLOPE_BATCHES)
        slope = (small, large)
    return Plan(
        job,
        layout,
        total_steps(job),
        train_step,
        slope or None,
        program.compile_eval(),
        program.state,
        program.teacher,
    )


def _batch_sharding(sharding: train.Sharding, rows: int) -> Any:
    data = sharding.mesh.shape["data"]
    return sharding.batch if rows % data == 0 else sharding.replicated


__all__ = [
    "FAST_CODEGEN",
    "FINE_TUNING",
    "HEADS",
    "SLOPE_BATCHES",
    "TRAIN_EXAMPLES",
    "Executable",
    "Layout",
    "PlainFineTuning",
    "Plan",
    "abstract_model",
    "batch_shapes",
    "fine_tuning",
    "layout_for",
    "loss_kind",
    "num_labels",
    "per_device_bytes",
    "plan",
    "program_key",
    "slope_executables",
    "slope_key",
    "state_breakdown",
    "total_steps",
]
