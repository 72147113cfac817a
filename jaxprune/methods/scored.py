"""Methods that prune by an importance criterion inside ``masked_optimizer``.

Gradual magnitude pruning, first-order Taylor, PLATON, PINS (with self-regularization),
knowledge-aware sparse pruning (SparseBERT) and self-distilled pruning differ only in the
criterion, the mask scope and schedule, and the loss; this module composes them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprune import criteria, losses, masks, paths, schedules
from jaxprune.methods.base import Run, Teacher, copy_tree
from jaxprune.models import layers
from jaxprune.models.heads import Output
from jaxprune.optim import NoEvidenceError, masked_optimizer, masks_of
from jaxprune.train.tasks import ModelFn, classes_view, task_loss

Objective = Literal["task", "kd", "self_regularization", "sparsebert", "cross_correlation"]


@dataclasses.dataclass(frozen=True)
class CriterionMethod:
    """A criterion-driven pruning method (see :func:`jaxprune.methods.get` for presets).

    Attributes:
      name: the preset's name.
      sparsity: final fraction of the prunable entries set to zero.
      criterion: a :mod:`jaxprune.criteria` name; ``criterion_args`` its hyperparameters.
      prunable: regex selecting the pruned leaves.
      scope: ``global`` ranking or ``local`` (per matrix).
      begin, end: the cubic schedule's start and end, as fractions of the run (< 1) or
        steps. Dense before ``begin``; final sparsity after ``end``.
      update_every: mask recomputation interval in the cubic phase (0: a hundredth of the
        run, SparseBERT's ~100 updates).
      final_every_step: recompute masks at every step after ``end`` (PLATON, PINS).
      hold_pruned: keep pruned weights at 0 between mask updates (False: the PLATON /
        PINS code, where they train and may regrow in between).
      lr_step_offset: the learning-rate step the criterion sees (PINS code: next step's).
      objective: the loss (``task``, ``kd`` = 0.5 CE + 0.5 T^2 KL, ``self_regularization``,
        ``sparsebert`` = attention + hidden MSE + soft CE, ``cross_correlation`` = CE +
        ``cc_weight`` * Barlow-Twins loss against the unpruned network).
      teacher_mode: for self-regularization, ``latest`` (refresh the teacher with the
        student every ``refresh_every`` steps: the paper's words) or ``best`` (the student
        whenever dev improves: the authors' code).
    """

    name: str
    sparsity: float = 0.9
    criterion: str = "magnitude"
    criterion_args: tuple[tuple[str, Any], ...] = ()
    prunable: str = paths.BERT_ENCODER_KERNELS
    scope: Literal["global", "local"] = "local"
    begin: float = 0.1
    end: float = 0.7
    update_every: int = 10
    final_every_step: bool = False
    hold_pruned: bool = True
    lr_step_offset: int = 0
    objective: Objective = "task"
    temperature: float = 2.0
    teacher_mode: Literal["latest", "best"] = "latest"
    refresh_every: int = 50
    cc_weight: float = 1.0
    cc_off_diagonal: float = 0.0051
    align_weight: float = 0.0  # provisional aligned-weight regulariser (SDP), off
    constant_lr: bool = False  # SparseBERT's BertAdam runs at a constant rate
    weight_decay: float | None = None  # None: the run's

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"{self.name}: sparsity must be in [0, 1), got {self.sparsity}")

    @property
    def teacher(self) -> Teacher:
        if self.objective == "self_regularization":
            return "self"
        if self.objective in ("kd", "sparsebert"):
            return "dense"
        if self.objective == "cross_correlation":
            return "self"  # the unpruned network, frozen at the start
        return "none"

    def init(self, params: Any) -> Any:
        return params

    def schedule(self, run: Run) -> tuple[optax.Schedule, Any]:
        begin, end = run.step_at(self.begin), run.step_at(self.end)
        schedule = schedules.cubic(self.sparsity, begin_step=begin, end_step=max(end, begin + 1))
        every = self.update_every or max(1, round(run.total_steps / 100))  # 0: ~100 updates
        due = schedules.every(every, final_from=end if self.final_every_step else None)
        return schedule, due

    def optimizer(self, run: Run, params: Any) -> optax.GradientTransformation:
        del params
        lr = run.learning_rate if self.constant_lr else run.lr_schedule()
        wd = run.weight_decay if self.weight_decay is None else self.weight_decay
        schedule, due = self.schedule(run)
        inner = optax.adamw(lr, eps=1e-8, weight_decay=wd)
        criterion = criteria.by_name(self.criterion, **dict(self.criterion_args))
        try:
            tx = masked_optimizer(
                inner,
                criterion=criterion,
                schedule=schedule,
                prunable=self.prunable,
                scope=self.scope,
                update_every=due,
                learning_rate=lr,
                lr_step_offset=self.lr_step_offset,
                hold_pruned=self.hold_pruned,
                total_steps=run.total_steps,
            )
        except NoEvidenceError as err:
            raise NoEvidenceError(
                f"{self.name}: pruning begins at step {run.step_at(self.begin)} (begin="
                f"{self.begin} of a {run.total_steps}-step run) and a mask update prunes before "
                f"step {criterion.warmup}, where {criterion.name}'s scores are still all 0. Set "
                f"begin >= {criterion.warmup} (--set method_options.begin={criterion.warmup}) "
                f"or train longer. ({err})"
            ) from err
        return run.clipped(tx)

    def loss(self, forward: ModelFn, run: Run, teacher_forward: ModelFn | None = None):
        kind, objective, temperature = run.task, self.objective, self.temperature
        teacher_forward = teacher_forward or forward  # default: the student's architecture

        def loss_fn(params, batch, rng, teacher, step):
            del step
            if objective == "task":
                logits = forward(params, batch, train=True, rng=rng).logits
                return task_loss(logits, batch, kind), {}
            if objective == "sparsebert":
                if "cls_positions" in batch:
                    raise ValueError(
                        "sparsebert's attention and hidden-state MSE average over every "
                        "position of a padded row, as the authors' code does; packed rows "
                        "change that average. Train it on unpacked batches (pack=False)."
                    )
                extra = dict(output_hidden_states=True, output_attention_scores=True)
                student = forward(params, batch, train=True, rng=rng, **extra)
                dense = teacher_forward(teacher, batch, **extra)
                total, parts = losses.sparsebert(
                    student,
                    dense,
                    batch.get("labels"),
                    regression=kind == "regression",
                    weights=batch.get("valid"),
                )
                return total, parts
            if objective == "cross_correlation":
                extra = dict(output_hidden_states=True)
                student = forward(params, batch, train=True, rng=rng, **extra)
                dense = teacher_forward(teacher["params"], batch, **extra)
                ce = task_loss(student.logits, batch, kind)
                z_student, z_weights = _first_tokens(_last_hidden(student, "student"), batch)
                cc = losses.cross_correlation(
                    z_student,
                    _first_tokens(_last_hidden(dense, "teacher"), batch)[0],
                    off_diagonal=self.cc_off_diagonal,
                    weights=z_weights,
                )
                total = ce + self.cc_weight * cc
                if self.align_weight:
                    total = total + self.align_weight * _alignment(
                        params, teacher["params"], self.prunable
                    )
                return total, {"ce": ce, "cross_correlation": cc}
            logits, labels, weights = classes_view(
                forward(params, batch, train=True, rng=rng).logits, batch, kind
            )
            t_params = teacher if objective == "kd" else teacher["params"]
            t_logits = classes_view(teacher_forward(t_params, batch).logits, batch, kind)[0]
            t_logits = jax.lax.stop_gradient(t_logits)
            if objective == "kd":
                loss = losses.distillation(
                    logits, t_logits, labels, temperature=temperature, weights=weights
                )
                return loss, {}
            loss = losses.self_regularization(
                logits, t_logits, labels, temperature=temperature, weights=weights
            )
            return loss, {"alpha": jnp.mean(losses.adaptive_alpha(logits))}

        return loss_fn

    def initial_teacher(self, params: Any, dense_teacher: Any = None) -> Any:
        """The teacher pytree the loss starts with (None when the method has none)."""
        if self.teacher == "none":
            return None
        if self.teacher == "dense":
            if dense_teacher is None:
                raise ValueError(f"{self.name} distils from a fine-tuned dense teacher: pass one")
            return dense_teacher
        start = params if dense_teacher is None else dense_teacher
        return {"params": copy_tree(start), "best": jnp.asarray(-jnp.inf, jnp.float32)}

    def update_teacher(self, state: Any, teacher: Any, dev: dict | None) -> Any:
        """Self-regularization's teacher refresh; identity for the other objectives.

        ``latest``: every ``refresh_every`` steps the teacher becomes the current student.
        ``best``: when dev's primary metric beats the best so far, likewise (the code).
        The teacher is always a past or current student, never a newer one.
        """
        if self.objective != "self_regularization":
            return teacher
        if self.teacher_mode == "latest":
            if int(state.step) % self.refresh_every == 0:
                return {"params": copy_tree(state.params), "best": teacher["best"]}
            return teacher
        if dev is None:
            return teacher
        score = np.float32(dev[dev.get("primary", "accuracy")])  # compared as stored
        if score > np.float32(teacher["best"]):
            return {"params": copy_tree(state.params), "best": jnp.asarray(score)}
        return teacher

    def export(self, trainable: Any, opt_state: Any, run: Run) -> tuple[Any, Any]:
        del run
        current = masks_of(opt_state)
        return masks.apply(trainable, current), current


def _alignment(params: Any, dense: Any, prunable: str) -> jax.Array:
    """Mean provisional aligned-weight regulariser over the pruned kernels."""
    chosen = paths.select(params, prunable)
    terms = [
        losses.weight_alignment(p, d)
        for keep, p, d in zip(
            jax.tree.leaves(chosen), jax.tree.leaves(params), jax.tree.leaves(dense), strict=True
        )
        if keep and p.ndim == 2
    ]
    if not terms:
        raise ValueError(f"prunable={prunable!r} selects no 2-D kernel to align")
    return sum(terms[1:], terms[0]) / len(terms)


# Presets: each paper's defaults. Schedule points are fractions of the run (override with
# steps for exact paper parity, e.g. PINS's RTE script: begin=200, end=T - 1200).
PRESETS: dict[str, CriterionMethod] = {
    # Zhu & Gupta 2017 as in the movement-pruning code's magnitude baseline: per-matrix
    # |W| top-k, sticky masks, recomputed every 10 steps (TF's pruning_frequency).
    "magnitude": CriterionMethod(name="magnitude"),
    # First-order Taylor |w*g|, EMA 0.85 (PLATON's beta1), one global ranking.
    "taylor": CriterionMethod(
        name="taylor", criterion="taylor", criterion_args=(("ema", 0.85),), scope="global"
    ),
    # PLATON (Zhang et al. 2022): code defaults of the GLUE scripts.
    "platon": CriterionMethod(
        name="platon",
        criterion="platon",
        criterion_args=(("beta1", 0.85), ("beta2", 0.95), ("window", 10)),
        prunable=paths.BERT_ENCODER_KERNELS_AND_BIASES,
        scope="global",
        final_every_step=True,
        hold_pruned=False,
    ),
    # PINS (Ren & Zhu 2023): glue.sh settings, self-regularization with the paper's
    # latest-checkpoint teacher (teacher_mode="best" is the code's).
    "pins": CriterionMethod(
        name="pins",
        criterion="pins",
        criterion_args=(("beta1", 0.85), ("beta2", 0.99), ("window", 10)),
        prunable=paths.BERT_ENCODER_KERNELS_AND_BIASES,
        scope="global",
        final_every_step=True,
        hold_pruned=False,
        lr_step_offset=1,
        objective="self_regularization",
        temperature=2.0,
    ),
    # SparseBERT (Xu et al. 2021): per-matrix magnitude over the whole run with ~100 mask
    # updates, distilling a fine-tuned dense teacher (attention + hidden MSE + soft CE, T=1),
    # constant learning rate, weight decay 0.01.
    "sparsebert": CriterionMethod(
        name="sparsebert",
        begin=0.0,
        end=0.99,
        update_every=0,
        objective="sparsebert",
        temperature=1.0,
        constant_lr=True,
        weight_decay=0.01,
    ),
    # oBERT (Kurtic et al. 2022): the block empirical-Fisher saliency w^2 / (2 [F^-1]_qq),
    # B = 50, lambda = 1e-7, one global ranking of the encoder's kernels, the surgeon update
    # of the kept weights at each of a few mask updates, m = update_every = 1024 training
    # gradients per window (the paper draws them from extra passes; its KD is objective=kd).
    "obert": CriterionMethod(
        name="obert",
        criterion="obert",
        criterion_args=(("block", 50), ("num_grads", 1024), ("damp", 1e-7)),
        scope="global",
        update_every=1024,
    ),
    # Self-distilled pruning (O'Neill et al. 2022), reconstructed: magnitude pruning plus a
    # Barlow-Twins cross-correlation between the pruned and the unpruned network's final
    # [CLS] states. Unverified choices (paper text unavailable) are options: scope, weight,
    # representation; the aligned-weight regulariser is provisional and off.
    "sdp": CriterionMethod(name="sdp", objective="cross_correlation", cc_weight=1.0),
}


def _last_hidden(out: Output, name: str) -> jax.Array:
    """The last layer's hidden states of a forward called with ``output_hidden_states``."""
    if out.hidden_states is None:
        raise ValueError(f"the {name} forward returned no hidden_states")
    return out.hidden_states[-1]


def _first_tokens(hidden: jax.Array, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Every example's first-token vector, (N, D), and its weight, (N,): 1 for a real example,
    0 for a padding row or an empty packed slot. ``hidden`` is (B, L, D); packed rows give
    ``B * S`` vectors (``cls_positions``), unpacked ones ``B``."""
    first = layers.first_tokens(hidden, batch.get("cls_positions"))
    valid = batch.get("valid")
    weights = jnp.ones(first.shape[:-1]) if valid is None else jnp.asarray(valid)
    return first.reshape(-1, first.shape[-1]), weights.reshape(-1).astype(jnp.float32)


__all__ = [
    "PRESETS",
    "CriterionMethod",
    "Objective",
]
