"""A check of a traced value that raises when the computation runs, for standalone functions.

Inside ``jit`` a value such as a traced sparsity is only known on the device. ``fail_if``
runs a host callback in the branch where the value is wrong, and the step stops with the
ValueError's message (JAX surfaces it as a ``JaxRuntimeError`` carrying that text when the
result is used). The callback runs on every device (``partitioned=True``): were only one to
raise, the others would wait for it in the next collective until XLA aborts the process.
On concrete values it raises the ValueError at once.

A program holding a host callback runs slower on GPUs even when the callback never fires
(see :mod:`jaxprune.failure`), so the train step (``masked_optimizer``) records failures in
its state instead; this is for functions called on their own, such as ``masks.topk``. The
callback needs a CPU backend: with ``JAX_PLATFORMS`` set to an accelerator alone, JAX
reports that instead of the message (still an error).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _raise(message: str, *values: Any) -> None:
    raise ValueError(message.format(*(np.asarray(v).item() for v in values)))


def fail_if(pred: Any, message: str, *values: Any) -> None:
    """Raises ``ValueError(message.format(*values))`` where the scalar ``pred`` is True.

    Args:
      pred: bool scalar, concrete or traced.
      message: a ``str.format`` template filled with the scalar ``values``.
      values: scalars shown in the message (concrete or traced).
    """
    if not any(isinstance(v, jax.core.Tracer) for v in (pred, *values)):
        if bool(pred):
            _raise(message, *values)
        return
    lax.cond(
        jnp.asarray(pred),
        lambda: jax.debug.callback(functools.partial(_raise, message), *values, partitioned=True),
        lambda: None,
    )


def sparsity_in_range(sparsity: Any, where: str) -> None:
    """Fails unless ``0 <= sparsity < 1`` (NaN fails): ``where`` names the caller."""
    sparsity = jnp.asarray(sparsity, jnp.float32)
    bad = ~((sparsity >= 0) & (sparsity < 1))
    fail_if(bad, where + ": sparsity must be in [0, 1), got {}", sparsity)
