"""What a pruning method is: a small object that composes the core pieces for a run.

A method turns a model's params into what is trained (``init``), says how it is optimized
(``optimizer``), what is minimised (``loss``), how a self-teacher evolves
(``update_teacher``) and what the pruned model is (``export``). The engine
(:mod:`jaxprune.train`) runs any method the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp
import optax

from jaxprune.train.step import LossFn
from jaxprune.train.tasks import ModelFn

Teacher = Literal["none", "dense", "self"]


@dataclasses.dataclass(frozen=True)
class Run:
    """The facts of a training run a method's schedules are built from.

    Attributes:
      total_steps: optimizer steps of the whole run.
      learning_rate: peak learning rate of the weights.
      warmup_steps: linear learning-rate warm-up, then linear decay to 0 at
        ``total_steps`` (the transformers schedule every paper here uses).
      weight_decay: AdamW's decoupled weight decay.
      max_grad_norm: global-norm clipping before the optimizer (0 disables).
      task: loss kind: classification, regression, token or qa.
    """

    total_steps: int
    learning_rate: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    task: str = "classification"

    def __post_init__(self):
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}), "
                f"got {self.warmup_steps}"
            )

    def lr_schedule(self, peak: float | None = None) -> optax.Schedule:
        peak = self.learning_rate if peak is None else peak
        decay = optax.linear_schedule(peak, 0.0, self.total_steps - self.warmup_steps)
        if not self.warmup_steps:
            return decay
        warm = optax.linear_schedule(0.0, peak, self.warmup_steps)
        return optax.join_schedules([warm, decay], [self.warmup_steps])

    def step_at(self, fraction_or_step: float) -> int:
        """A schedule point given as a fraction of the run (< 1) or an absolute step."""
        if fraction_or_step < 1:
            return round(fraction_or_step * self.total_steps)
        return int(fraction_or_step)

    def clipped(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        if self.max_grad_norm <= 0:
            return tx
        return optax.chain(optax.clip_by_global_norm(self.max_grad_norm), tx)


class Method(Protocol):
    """The interface every method implements (see the module docstring)."""

    name: str
    teacher: Teacher  # what the loss expects as ``teacher``

    @property
    def sparsity(self) -> float | None:
        """The target fraction of pruned entries; None where a regulariser sets it."""

    def init(self, params: Any) -> Any:
        """The trainable pytree (the params, or params plus learned scores)."""

    def optimizer(self, run: Run, params: Any) -> optax.GradientTransformation: ...

    def loss(self, forward: ModelFn, run: Run, teacher_forward: ModelFn | None = None) -> LossFn:
        """``(trainable, batch, rng, teacher, step) -> (loss, aux)``."""

    def update_teacher(self, state: Any, teacher: Any, dev: dict | None) -> Any: ...

    def export(self, trainable: Any, opt_state: Any, run: Run) -> tuple[Any, Any]:
        """``(params with pruned entries exactly 0, bool masks with None where not pruned)``."""


def copy_tree(tree: Any) -> Any:
    """A device copy (a teacher must not alias buffers the train step donates)."""
    return jax.tree.map(jnp.copy, tree)


__all__ = [
    "Method",
    "Run",
    "Teacher",
    "copy_tree",
]
