"""Checks of traced values that raise when the computation runs.

Inside ``jit`` a value such as a schedule's sparsity is only known on the device. These
checks run a host callback in the branch where the value is wrong, so a correct step pays
one scalar comparison, and a wrong one stops with the ValueError's message (JAX surfaces it
as a ``JaxRuntimeError`` carrying that text when the result is used). The callback runs on
every device (``partitioned=True``): were only one to raise, the others would wait for it
in the next collective until XLA aborts the process. On concrete values they raise the
ValueError at once.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _raise(message: str, *values: Any) -> None:
    raise ValueError(message.format(*(np.asarray(v).item() for v in values)))


def callback_if(pred: Any, callback: Any, *values: Any) -> None:
    """Runs ``callback(*values)`` on the host where the traced scalar ``pred`` is True, on
    every device (see :func:`fail_if`)."""
    lax.cond(
        jnp.asarray(pred),
        lambda: jax.debug.callback(callback, *values, partitioned=True),
        lambda: None,
    )


def fail_if(pred: Any, message: str, *values: Any) -> None:
    """Raises ``ValueError(message.format(*values))`` where the scalar ``pred`` is True.

    Args:
      pred: bool scalar, concrete or traced.
      message: a ``str.format`` template filled with the scalar ``values``.
      values: scalars shown in the message (concrete or traced).
    """
    if not any(_is_traced(v) for v in (pred, *values)):
        if bool(pred):
            _raise(message, *values)
        return

    callback_if(pred, functools.partial(_raise, message), *values)


def sparsity_in_range(sparsity: Any, where: str, step: Any = None) -> None:
    """Fails unless ``0 <= sparsity < 1`` (NaN fails): ``where`` names the caller."""
    sparsity = jnp.asarray(sparsity, jnp.float32)
    bad = ~((sparsity >= 0) & (sparsity < 1))
    if step is None:
        fail_if(bad, where + ": sparsity must be in [0, 1), got {}", sparsity)
    else:
        fail_if(
            bad,
            where + ": the schedule gave sparsity {} at step {}; it must be in [0, 1)",
            sparsity,
            step,
        )
