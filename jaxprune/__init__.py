"""jaxprune: pruning pre-trained language models to high sparsity in JAX.

The core is pure functions on parameter pytrees (:mod:`jaxprune.criteria`,
:mod:`jaxprune.masks`, :mod:`jaxprune.schedules`) and one optax transformation,
:func:`masked_optimizer`, that applies them inside any JAX training step. Models, data,
training and compaction (:mod:`jaxprune.compact`) are imported on demand, not here.
"""

from jaxprune import (
    criteria,
    export,
    failure,
    masks,
    obert,
    oneshot,
    paths,
    schedules,
    structured,
)
from jaxprune.criteria import Criterion
from jaxprune.masks import sparsity, sparsity_report
from jaxprune.optim import MaskedOptimizerState, check, masked_optimizer, masked_state, masks_of

__version__ = "0.1.0.dev0"

__all__ = [
    "Criterion",
    "MaskedOptimizerState",
    "check",
    "criteria",
    "export",
    "failure",
    "masked_optimizer",
    "masked_state",
    "masks",
    "masks_of",
    "obert",
    "oneshot",
    "paths",
    "schedules",
    "sparsity",
    "sparsity_report",
    "structured",
]
