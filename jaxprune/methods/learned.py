"""Methods that learn a score per prunable weight: movement, soft movement and SMP.

The trainable pytree is ``{"params": params, "scores": scores}``: ``scores`` has the
structure of ``params``, a float32 array shaped like every prunable leaf (constant
``score_init``, 0 by default: ``mask_init=constant, mask_scale=0``) and ``None`` elsewhere.
The forward pass uses the effective weights ``W' = W * M_ste`` on the prunable leaves, with
the straight-through estimator

    M_ste = M + (S - stop_gradient(S))

so the forward sees exactly ``W * M`` (``S - S`` is exactly 0, so the mask values are exactly
0 or 1) and ``dL/dS = W * dL/dW'`` for every entry, pruned ones included (the binarizers'
``backward`` returns the incoming gradient unchanged). Biases are never masked. ``M`` is a
boolean mask computed from the scores at every step:

* ``local``: top ``round(r_t * n)`` scores of each matrix (movement, SMP-L);
* ``smp_s``: per-matrix ratios from each matrix's share of mean sigmoid(S / p) among the
  matrices of its type (SMP-S, :func:`smp_s_ratios`);
* ``global``: top ``round(r_t * N)`` scores over all prunable matrices (SMP's "G");
* ``threshold``: ``sigmoid(S) > tau_t`` with a floor of ``int(0.005 n) + 1`` kept entries
  per matrix (soft movement).

Schedules (``t`` = optimizer steps taken; :meth:`ScoreMethod.remaining`,
:meth:`ScoreMethod.threshold`, :meth:`ScoreMethod.regularization`): with
``p = clip((t - begin) / (end - begin), 0, 1)`` and ``ramp(t) = 1 - (1 - p)^3``, the
remaining ratio is ``r_t = v + (1 - v)(1 - p)^3 = 1 - (1 - v) ramp(t)`` (v = 1 - sparsity;
exactly v from ``end`` on), the soft-movement
threshold ``tau_t = tau_final ramp(t)`` and the regulariser weight
``lambda_t = final_lambda ramp'(t)``, where ``ramp'`` follows the mask schedule
(``lambda_ramp="mask"``: movement's ``final_lambda tau_t / tau_final``) or runs from step 0 to
``regu_ramp_steps`` (default the whole run: SMP's code). The loss adds
``lambda_t * losses.sigmoid_l1(S)`` (mean over matrices of mean sigmoid(S)).

Evaluation and export use the masks of the final scores at the final ratio (or ``tau_final``),
as the movement-pruning code evaluates at ``final_threshold``:
``method.eval_params(trainable)`` gives the masked params; wrap the model's forward with
``method.head_forward(forward, run)`` (identity unless ``head="label_words"``).

Top-k keeps ``round(r n)`` entries (as every jaxprune top-k; the PyTorch code keeps
``int(r n)``: at most one entry per matrix of difference). Ties are broken by position.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from jaxprune import losses, masks, paths
from jaxprune.methods.base import Run, Teacher
from jaxprune.train.tasks import ModelFn, classes_view, task_loss

MaskKind = Literal["local", "smp_s", "global", "threshold"]

# The task heads that transformers initialises from scratch on top of a pre-trained body.
HEAD_PARAMS = r"^(classifier|pre_classifier|qa_outputs)(/|$)"
# Movement pruning freezes the embedding module (``self.embeddings.requires_grad_(False)``).
EMBEDDINGS = r"(^|/)embeddings/"
# Leaves under these prefixes form a masked-LM head (needed by ``head="label_words"``).
_MLM_HEADS = r"^(cls|lm_head|vocab_transform|vocab_projector)(/|$)"


def _ramp(step: Any, begin: int, end: int) -> jax.Array:
    """``1 - (1 - p)^3`` with ``p = clip((step - begin) / (end - begin), 0, 1)``: 0 -> 1."""
    p = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / (end - begin), 0.0, 1.0)
    return 1.0 - (1.0 - p) ** 3


def _matches(tree: Any, pattern: str | None) -> Any:
    """Bool pytree: does the leaf's path match ``pattern`` (never raises when none does)."""
    regex = None if pattern is None else re.compile(pattern)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    chosen = [regex is not None and bool(regex.search(paths.path_str(p))) for p, _ in flat]
    return jax.tree_util.tree_unflatten(treedef, chosen)


def _kept_count(ratio: jax.Array, n: int) -> jax.Array:
    """``round(ratio * n)`` clipped to [0, n], int32 (float32 arithmetic, as jaxprune.masks)."""
    return jnp.clip(jnp.round(jnp.asarray(ratio, jnp.float32) * n), 0, n).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=2)
def _topk_counts(leaves: list[jax.Array], ks: jax.Array, one_group: bool) -> list[jax.Array]:
    """Exact top-``ks[i]`` of every leaf (or top-``ks[0]`` over all leaves when one_group).

    Uses ``jaxprune.masks``' bisection top-k (no sort, no gather of sharded leaves) with a
    count per leaf rather than one sparsity."""
    groups = [0] * len(leaves) if one_group else list(range(len(leaves)))
    return masks.grouped_topk(leaves, groups, ks)


def type_key(path: str) -> str:
    """A matrix's type for SMP-S: its path with the layer index removed."""
    return re.sub(r"/\d+(?=/|$)", "", path)


def smp_s_ratios(scores: Any, remaining: Any, temperature: float = 1.0) -> Any:
    """SMP-S's per-matrix remaining ratios (the code's ``set_magnitude_topk_threshold``).

    For every matrix type (leaves whose paths agree once the layer index is removed: query,
    key, value, attention output, intermediate, output), with ``m_l = mean(sigmoid(S_l / p))``
    and ``L`` matrices of that type, ``r_l = m_l / sum_l' m_l' * (L * remaining)``. There is
    no cap: ``r_l >= 1`` keeps the whole matrix (the realised overall ratio can then fall
    slightly below ``remaining``). A zero denominator falls back to ``remaining``.

    Args:
      scores: pytree of score arrays (``None`` leaves skipped and kept).
      remaining: the scheduled overall remaining ratio ``r_t`` (may be traced).
      temperature: ``p``.

    Returns:
      A pytree of float32 scalars shaped like ``scores``' structure.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(scores)
    keys = [type_key(paths.path_str(p)) for p, _ in flat]
    means = [jnp.mean(jax.nn.sigmoid(jnp.asarray(s, jnp.float32) / temperature)) for _, s in flat]
    remaining = jnp.asarray(remaining, jnp.float32)
    ratios = []
    for key, m in zip(keys, means, strict=True):
        members = [mm for k, mm in zip(keys, means, strict=True) if k == key]
        total = sum(members[1:], members[0])
        share = m / jnp.where(total > 0, total, 1.0) * (len(members) * remaining)
        ratios.append(jnp.where(total > 0, share, remaining))
    return jax.tree_util.tree_unflatten(treedef, ratios)


@dataclasses.dataclass(frozen=True)
class ScoreMethod:
    """A learned-score pruning method (see :func:`jaxprune.methods.get` for the presets).

    Attributes:
      name: the preset's name.
      sparsity: final fraction of the prunable entries set to 0 (``1 - v``). ``None`` for
        ``mask="threshold"``, whose sparsity is driven by ``final_lambda`` and ``tau_final``.
      mask: ``local`` (per-matrix top-k), ``smp_s``, ``global`` or ``threshold``.
      prunable: regex selecting the pruned leaves.
      begin, end: the cubic ramp of the mask schedule (remaining ratio, or tau), as
        fractions of the run (< 1) or steps: dense up to ``begin``, final from ``end`` on.
        For SMP ``end`` is the paper's N (``--warmup_threshold_step``) and ``begin`` is 0.
      score_lr: peak learning rate of the scores (AdamW, no weight decay, the run's warm-up
        and linear decay to 0).
      score_init: the constant initial score.
      train_weights: train the params (movement) or freeze them (SMP).
      frozen: regex of params never trained when ``train_weights`` (movement: embeddings).
      train_head: with frozen weights, still train the task head (``head_params``) at the
        run's learning rate: needed when the head is new (no MLM head in the checkpoint).
      head_params: regex of the task-head leaves.
      head: ``classifier`` (the model's own head) or ``label_words`` (SMP's code: the frozen
        pre-trained MLM head at ``[MASK]``, or ``[CLS]`` when the row has no ``[MASK]``,
        restricted to ``label_word_ids``; needs a ``masked-lm`` model).
      label_word_ids: vocabulary id of every class's label word (``head="label_words"``);
        for ``qa`` two ids, the start and end logits of every token.
      mask_token_id: id of ``[MASK]`` (None: always the first token).
      objective: ``task`` or ``kd`` (``alpha_ce`` CE + ``alpha_kd`` T^2 KL(teacher||student)
        at ``temperature``, from a dense fine-tuned teacher).
      final_lambda: weight of the sigmoid-L1 score regulariser at the end of its ramp.
      lambda_ramp: ``mask``: lambda follows the mask schedule (movement's
        ``final_lambda * tau_t / tau_final``); ``run``: a cubic ramp from step 0 to
        ``regu_ramp_steps`` (SMP's code).
      regu_ramp_steps: end of the ``run`` lambda ramp (fraction < 1 or steps); None: the run.
      tau_final: the final sigmoid threshold (``threshold`` masks; tau ramps from 0).
      min_kept: the threshold masks' floor: at least ``int(min_kept * n) + 1`` entries of a
        matrix are kept (its top scores) when fewer pass the threshold.
      smp_s_temperature: SMP-S's p; None: 4 when ``v >= 0.7``, else 1 (the scripts).
      weight_decay: of the trained params (never of biases, LayerNorm or scores); None: the
        run's.
    """

    name: str
    sparsity: float | None = 0.9
    mask: MaskKind = "local"
    prunable: str = paths.BERT_ENCODER_KERNELS
    begin: float = 0.1
    end: float = 0.8
    score_lr: float = 1e-2
    score_init: float = 0.0
    train_weights: bool = True
    frozen: str | None = EMBEDDINGS
    train_head: bool = True
    head_params: str = HEAD_PARAMS
    head: Literal["classifier", "label_words"] = "classifier"
    label_word_ids: tuple[int, ...] = ()
    mask_token_id: int | None = None
    objective: Literal["task", "kd"] = "task"
    temperature: float = 2.0
    alpha_ce: float = 0.5
    alpha_kd: float = 0.5
    final_lambda: float = 0.0
    lambda_ramp: Literal["mask", "run"] = "mask"
    regu_ramp_steps: float | None = None
    tau_final: float = 0.1
    min_kept: float = 0.005
    smp_s_temperature: float | None = None
    weight_decay: float | None = None

    def __post_init__(self):
        if self.mask not in ("local", "smp_s", "global", "threshold"):
            raise ValueError(f"{self.name}: unknown mask {self.mask!r}")
        if self.mask == "threshold":
            if self.sparsity is not None:
                raise ValueError(
                    f"{self.name}: threshold masks have no target sparsity (it follows "
                    "final_lambda and tau_final); leave sparsity=None"
                )
            if not 0.0 <= self.tau_final < 1.0:
                raise ValueError(f"{self.name}: tau_final must be in [0, 1), got {self.tau_final}")
        elif self.sparsity is None or not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"{self.name}: sparsity must be in [0, 1), got {self.sparsity}")
        if self.objective not in ("task", "kd"):
            raise ValueError(f"{self.name}: objective must be 'task' or 'kd'")
        if self.head == "label_words" and not self.label_word_ids:
            raise ValueError(f"{self.name}: head='label_words' needs label_word_ids")
        if self.head not in ("classifier", "label_words"):
            raise ValueError(f"{self.name}: head must be 'classifier' or 'label_words'")

    # ------------------------------------------------------------------ protocol basics

    @property
    def teacher(self) -> Teacher:
        return "dense" if self.objective == "kd" else "none"

    def init(self, params: Any) -> Any:
        """``{"params": params, "scores": scores}`` (scores None on non-prunable leaves)."""
        if self.head == "label_words" and not any(jax.tree.leaves(_matches(params, _MLM_HEADS))):
            raise ValueError(
                f"{self.name}: head='label_words' needs a masked-lm model (an MLM head: "
                "cls/, lm_head/ or vocab_projector/); these params have none"
            )
        chosen = paths.select(params, self.prunable)
        paths.check_floating(params, chosen)
        scores = jax.tree.map(
            lambda keep, p: jnp.full_like(p, self.score_init, dtype=jnp.float32) if keep else None,
            chosen,
            params,
        )
        return {"params": params, "scores": scores}

    def initial_teacher(self, params: Any, dense_teacher: Any = None) -> Any:
        """The dense teacher's params for ``objective="kd"``; None otherwise."""
        del params
        if self.teacher == "none":
            return None
        if dense_teacher is None:
            raise ValueError(f"{self.name} distils from a fine-tuned dense teacher: pass one")
        return dense_teacher

    def update_teacher(self, state: Any, teacher: Any, dev: dict | None) -> Any:
        del state, dev
        return teacher

    # ---------------------------------------------------------------------- schedules

    def _mask_span(self, run: Run) -> tuple[int, int]:
        begin = run.step_at(self.begin)
        return begin, max(run.step_at(self.end), begin + 1)

    def remaining(self, run: Run, step: Any) -> jax.Array:
        """Scheduled remaining ratio ``r_t = v + (1 - v)(1 - p)^3`` (1 for threshold masks)."""
        if self.mask == "threshold":
            return jnp.ones(jnp.shape(step), jnp.float32)
        if self.sparsity is None:
            raise ValueError(f"{self.name}: mask={self.mask!r} needs a target sparsity")
        v = 1.0 - self.sparsity
        begin, end = self._mask_span(run)
        p = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / (end - begin), 0.0, 1.0)
        return (v + (1.0 - v) * (1.0 - p) ** 3).astype(jnp.float32)

    def threshold(self, run: Run, step: Any) -> jax.Array:
        """Scheduled sigmoid threshold ``tau_t = tau_final * ramp(t)`` (threshold masks)."""
        return (self.tau_final * _ramp(step, *self._mask_span(run))).astype(jnp.float32)

    def regularization(self, run: Run, step: Any) -> jax.Array:
        """Scheduled regulariser weight ``lambda_t``."""
        if self.lambda_ramp == "mask":
            ramp = _ramp(step, *self._mask_span(run))
        else:
            end = (
                run.total_steps
                if self.regu_ramp_steps is None
                else run.step_at(self.regu_ramp_steps)
            )
            ramp = _ramp(step, 0, max(end, 1))
        return (self.final_lambda * ramp).astype(jnp.float32)

    @property
    def p(self) -> float:
        """SMP-S's temperature in use: ``smp_s_temperature``, or 4 at ``v >= 0.7``, else 1."""
        if self.smp_s_temperature is not None:
            return self.smp_s_temperature
        return 4.0 if self.sparsity is not None and 1.0 - self.sparsity >= 0.7 else 1.0

    # -------------------------------------------------------------------------- masks

    def compute_masks(self, scores: Any, remaining: Any, tau: Any = None) -> Any:
        """Bool masks (None on non-prunable leaves) from ``scores`` at a remaining ratio
        (top-k masks) or a sigmoid threshold ``tau`` (threshold masks)."""
        scores = jax.lax.stop_gradient(scores)
        leaves, treedef = jax.tree.flatten(scores)
        if self.mask == "threshold":
            out = _threshold_masks(leaves, jnp.asarray(tau, jnp.float32), self.min_kept)
        elif self.mask == "global":
            n = sum(s.size for s in leaves)
            out = _topk_counts(leaves, _kept_count(remaining, n)[None], True)
        else:
            if self.mask == "smp_s":
                ratios = jax.tree.leaves(smp_s_ratios(scores, remaining, self.p))
            else:
                ratios = [remaining] * len(leaves)
            ks = jnp.stack([_kept_count(r, s.size) for r, s in zip(ratios, leaves, strict=True)])
            out = _topk_counts(leaves, ks, False)
        return jax.tree.unflatten(treedef, out)

    def masks_at(self, scores: Any, run: Run, step: Any) -> Any:
        """The masks the forward pass uses at ``step``."""
        return self.compute_masks(scores, self.remaining(run, step), self.threshold(run, step))

    def final_masks(self, scores: Any) -> Any:
        """The masks of ``scores`` at the final ratio (or ``tau_final``)."""
        v = None if self.sparsity is None else 1.0 - self.sparsity
        return self.compute_masks(scores, v, self.tau_final)

    def effective_params(self, trainable: Any, hard_masks: Any) -> Any:
        """``W * M_ste`` on the prunable leaves (straight-through to the scores)."""

        def one(s, m, p):
            if s is None:
                return p
            ste = m.astype(s.dtype) + (s - jax.lax.stop_gradient(s))  # exactly m forward
            return (p * ste).astype(p.dtype)

        return jax.tree.map(
            one, trainable["scores"], hard_masks, trainable["params"], is_leaf=_is_none
        )

    # ------------------------------------------------------------------ optimization

    def _param_labels(self, params: Any) -> Any:
        """``weights`` (trained at the run's rate) or ``frozen`` for every param leaf."""
        if self.train_weights:
            frozen = _matches(params, self.frozen)
            return jax.tree.map(lambda f: "frozen" if f else "weights", frozen)
        head = _matches(params, self.head_params)
        if self.train_head and self.head == "classifier" and not any(jax.tree.leaves(head)):
            raise ValueError(
                f"{self.name}: train_head=True but no param matches head_params="
                f"{self.head_params!r}"
            )
        train = self.train_head and self.head == "classifier"
        return jax.tree.map(lambda h: "weights" if (h and train) else "frozen", head)

    def optimizer(self, run: Run, params: Any) -> optax.GradientTransformation:
        """AdamW on the trained params (run's rate and schedule, no decay of biases and
        LayerNorm), AdamW on the scores (``score_lr``, same schedule shape, no decay), zero
        updates for frozen params; global-norm clipping over all gradients."""
        del params
        wd = run.weight_decay if self.weight_decay is None else self.weight_decay

        def labels(trainable):
            return {
                "params": self._param_labels(trainable["params"]),
                "scores": jax.tree.map(lambda _: "scores", trainable["scores"]),
            }

        def decays(tree):
            return jax.tree.map(lambda x: jnp.ndim(x) >= 2, tree)

        tx = optax.multi_transform(
            {
                "frozen": optax.set_to_zero(),
                "weights": optax.adamw(run.lr_schedule(), eps=1e-8, weight_decay=wd, mask=decays),
                "scores": optax.adamw(run.lr_schedule(self.score_lr), eps=1e-8, weight_decay=0.0),
            },
            labels,
        )
        return run.clipped(tx)

    # ----------------------------------------------------------------------- the loss

    def head_forward(self, forward: ModelFn, run: Run) -> ModelFn:
        """``forward`` whose logits are the task's: identity for ``head="classifier"``; for
        ``label_words``, the MLM logits of the label words at ``[MASK]`` (or ``[CLS]``), or at
        every token for ``qa`` / ``token`` tasks."""
        if self.head == "classifier":
            return forward
        ids = jnp.asarray(self.label_word_ids, jnp.int32)
        per_token = run.task in ("qa", "token")
        mask_id = self.mask_token_id

        def wrapped(params, batch, **kwargs):
            out = forward(params, batch, **kwargs)
            logits = out.logits
            if logits.ndim != 3:
                raise ValueError("head='label_words' needs a masked-lm model's (B, L, V) logits")
            if per_token:
                return out._replace(logits=logits[..., ids])
            pos = jnp.zeros(logits.shape[0], jnp.int32)
            if mask_id is not None:
                is_mask = batch["input_ids"] == mask_id
                pos = jnp.where(is_mask.any(-1), jnp.argmax(is_mask, -1), 0).astype(jnp.int32)
            picked = jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]
            return out._replace(logits=picked[:, ids])

        return wrapped

    def loss(self, forward: ModelFn, run: Run, teacher_forward: ModelFn | None = None):
        """``(trainable, batch, rng, teacher, step) -> (loss, aux)``.

        ``loss = task (or alpha_ce CE + alpha_kd KD) + lambda_t * sigmoid_l1(S)``; aux holds
        ``task``, ``lambda``, ``regularizer``, the scheduled ``remaining`` ratio (or ``tau``)
        and the realised ``sparsity`` of the step's masks. The teacher (``objective="kd"``)
        runs dense in eval mode through ``teacher_forward`` (default: the student's model
        with the student's head).
        """
        kind, kd = run.task, self.objective == "kd"
        if kd and kind not in ("classification", "qa"):
            raise ValueError(f"{self.name}: objective='kd' supports classification and qa")
        student = self.head_forward(forward, run)
        teacher_fn = student if teacher_forward is None else teacher_forward
        regularize = self.final_lambda != 0

        def loss_fn(trainable, batch, rng, teacher, step):
            labels = self._param_labels(trainable["params"])
            params = jax.tree.map(
                lambda lab, p: _freeze(p) if lab == "frozen" else p,
                labels,
                trainable["params"],
            )
            scores = trainable["scores"]
            hard = self.masks_at(scores, run, step)
            eff = self.effective_params({"params": params, "scores": scores}, hard)
            logits = student(eff, batch, train=True, rng=rng).logits
            task = task_loss(logits, batch, kind)
            total = task
            if kd:
                t_logits = jax.lax.stop_gradient(teacher_fn(teacher, batch).logits)
                total = self.alpha_ce * task + self.alpha_kd * _kd(
                    logits, t_logits, batch, kind, self.temperature
                )
            lam = self.regularization(run, step)
            reg = losses.sigmoid_l1(scores) if regularize else jnp.zeros((), jnp.float32)
            total = total + lam * reg
            kept = jax.tree.leaves(hard)
            pruned = sum(jnp.sum(~m, dtype=jnp.float32) for m in kept) / sum(m.size for m in kept)
            aux = {"task": task, "lambda": lam, "regularizer": reg, "sparsity": pruned}
            if self.mask == "threshold":
                aux["tau"] = self.threshold(run, step)
            else:
                aux["remaining"] = self.remaining(run, step)
            return total, aux

        return loss_fn

    # ------------------------------------------------------------------------- export

    def export(self, trainable: Any, opt_state: Any, run: Run) -> tuple[Any, Any]:
        """``(params * final masks, final masks)``: pruned entries exactly 0, masks None on
        the leaves that are not pruned. The realised sparsity is
        ``jaxprune.masks.sparsity_report(params, masks).sparsity`` (for soft movement it is
        whatever the regulariser reached)."""
        del opt_state, run
        final = self.final_masks(trainable["scores"])
        return masks.apply(trainable["params"], final), final

    def eval_params(self, trainable: Any) -> Any:
        """The params evaluation sees: masked by the final scores at the final ratio."""
        return masks.apply(trainable["params"], self.final_masks(trainable["scores"]))


def _is_none(x: Any) -> bool:
    return x is None


def _freeze(p: jax.Array) -> jax.Array:
    """A frozen param, with no gradient: vectors (biases, LayerNorm) through
    :func:`_zero_grad`, matrices through ``stop_gradient`` (computing their gradients would
    cost real work, e.g. the embedding table's scatter-add)."""
    return _zero_grad(p) if jnp.ndim(p) < 2 else jax.lax.stop_gradient(p)


@jax.custom_vjp
def _zero_grad(x: jax.Array) -> jax.Array:
    """Identity whose gradient is ``0 * g``: zero, as ``stop_gradient``'s, for a finite
    cotangent ``g`` (a non-finite one makes it NaN, so the step reports it).

    Reading ``g`` keeps XLA computing the bias and LayerNorm gradients, and so the fusions of
    the dense model's backward pass: with SMP's biases under ``stop_gradient``, XLA:CPU fused
    each FFN's activation gradient into a transposing copy instead, about 0.1 s of a 0.7 s
    MiniLM train step (benchmarks/engine.py: SMP 1.18x dense, 1.00-1.05x with this)."""
    return x


def _zero_grad_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return x, None


def _zero_grad_bwd(_: None, g: jax.Array) -> tuple[jax.Array]:
    return (g * 0,)  # a float product with 0 is not folded away


_zero_grad.defvjp(_zero_grad_fwd, _zero_grad_bwd)


def _kd(student, teacher, batch, kind, temperature):
    """T^2 KL(teacher || student) at ``temperature`` over the task's class problems
    (:func:`jaxprune.train.tasks.classes_view`: for QA the mean over start and end; ignored
    token positions and padding rows or packed slots weigh 0)."""
    s, _, weights = classes_view(student, batch, kind)
    return losses.kd_kl(s, classes_view(teacher, batch, kind)[0], temperature, weights)


def _threshold_masks(leaves: list[jax.Array], tau: jax.Array, min_kept: float) -> list[jax.Array]:
    """``sigmoid(S) > tau`` per leaf; a leaf keeping fewer than ``int(min_kept n) + 1``
    entries keeps its ``int(min_kept n) + 1`` highest scores instead (ThresholdBinarizer)."""
    hard = [jax.nn.sigmoid(s.astype(jnp.float32)) > tau for s in leaves]
    floors = [int(min_kept * s.size) + 1 for s in leaves]
    short = jnp.stack([jnp.sum(h, dtype=jnp.int32) < f for h, f in zip(hard, floors, strict=True)])

    def with_floor():
        top = _topk_counts(leaves, jnp.asarray(floors, jnp.int32), False)
        return [jnp.where(short[i], t, h) for i, (t, h) in enumerate(zip(top, hard, strict=True))]

    return jax.lax.cond(jnp.any(short), with_floor, lambda: hard)


# SMP's settings (Jiang et al. 2023, code run.sh / SMPTrainer), shared by its three presets.
_SMP: dict[str, Any] = dict(
    begin=0.0,
    end=0.7,
    score_lr=2e-2,
    train_weights=False,
    frozen=None,
    final_lambda=400.0,
    lambda_ramp="run",
)

# Presets: each paper's defaults. Schedule points are fractions of the run (< 1) or steps.
PRESETS: dict[str, ScoreMethod] = {
    # Movement pruning (Sanh, Wolf & Rush 2020), hard top-k per matrix (`pruning_method=topK`
    # of the movement-pruning code). Defaults: sparsity 0.9; dense until 10% of the run,
    # cubic to the final ratio at 80% (the SQuAD README: warmup 5400 of ~55k steps,
    # initial_warmup 1, final_warmup 2; set the run's LR warm-up to match for parity);
    # scores AdamW lr 1e-2, no weight decay, the run's warm-up + linear decay; weights at the
    # run's rate; embeddings frozen; global clip at the run's max_grad_norm. objective="kd"
    # gives the code's 0.5 CE + 0.5 T^2 KL (T=2) from a dense fine-tuned teacher.
    # Differences: keeps round(r n) entries per matrix (the code: int(r n)); ramp points are
    # fractions of the run (the code counts them in LR warm-up steps).
    "movement": ScoreMethod(name="movement"),
    # Soft movement pruning (Sanh et al. 2020; `sigmoied_threshold`): M = sigmoid(S) > tau_t,
    # tau 0 -> tau_final=0.1 on the movement cubic schedule (SQuAD README command), L1
    # regulariser lambda_t = final_lambda tau_t / tau_final with final_lambda=400 (README),
    # a per-matrix floor of int(0.005 n) + 1 kept entries. The final sparsity is not set:
    # tune final_lambda / tau_final and read it from export. The paper writes S > tau; the
    # code (followed here) thresholds sigmoid(S); the backward ignores the sigmoid (STE).
    "soft_movement": ScoreMethod(
        name="soft_movement", sparsity=None, mask="threshold", final_lambda=400.0
    ),
    # SMP-L (Jiang et al. 2023, "Pruning pre-trained language models without fine-tuning"):
    # weights frozen, only the scores train (AdamW lr 2e-2, linear decay to 0 over the run,
    # no weight decay, clip 1.0 = the run's max_grad_norm). Remaining ratio
    # r_t = v + (1 - v)(1 - t/N)^3 up to N = end = 0.7 of the run (the code's
    # --warmup_threshold_step; GLUE used 3500-5250 steps at v >= 0.7 and ~60% of the run at
    # high sparsity), then v = 1 - sparsity (default 0.9). lambda_t = 400 (1 - (1 - t/T)^3)
    # over the whole run (or regu_ramp_steps). objective="kd": 0.5 CE + 0.5 T^2 KL, T=2.
    # Differences from the paper (spec table 2.10), all following the code: R(S) is the mean
    # over matrices of mean sigmoid(S) (paper: sum); lambda ramps over the whole run (paper:
    # s_t/s_f); KD is KL(teacher || student) (paper: KL(p_s || p_t)); linear LR decay and
    # clipping (HF Trainer); the paper's ramp lengths for low / high sparsity are swapped
    # relative to the scripts (set `end` per run). Selecting the best dev checkpoint at the
    # target sparsity is the training loop's business. The head: the code uses the
    # frozen pre-trained MLM head restricted to label words (head="label_words", needs a
    # masked-lm model); the default here trains a new classifier head at the run's learning
    # rate (paper Table 4's "from scratch, lr 3e-5"), for checkpoints with no MLM head.
    # Top-k keeps round(v n) per matrix (the code: int(v n)).
    "smp": ScoreMethod(name="smp", **_SMP),
    # SMP-S (Jiang et al. 2023): as smp, with per-matrix ratios recomputed every step from
    # mean sigmoid(S / p) shares within each matrix type (smp_s_ratios): no cap at 1, zero
    # sum -> r_t. p = smp_s_temperature; None (default) is the scripts' choice, 4 when
    # v >= 0.7 and 1 otherwise (they also use 3 for MNLI 50% without KD, 4 for SQuAD 50%).
    # The paper's Eq. 4 sums sigmoid(S) without p; matrices of one type have equal sizes, so
    # the mean is the same allocation at p = 1.
    "smp_s": ScoreMethod(name="smp_s", mask="smp_s", **_SMP),
    # SMP's "G" ablation (paper Table 3): one exact top-k over all prunable scores, recomputed
    # every step, otherwise as smp.
    "smp_global": ScoreMethod(name="smp_global", mask="global", **_SMP),
}


__all__ = [
    "EMBEDDINGS",
    "HEAD_PARAMS",
    "PRESETS",
    "MaskKind",
    "ScoreMethod",
    "smp_s_ratios",
    "type_key",
]
