"""The training engine: state, jitted steps, meshes, checkpoints and the loop."""

from jaxprune.train import distributed, mask_history
from jaxprune.train.checkpoint import Checkpointer, CheckpointError
from jaxprune.train.loop import LoopConfig, NonFiniteError, fit
from jaxprune.train.mesh import MeshMismatchError, Sharding, make_mesh
from jaxprune.train.step import TrainState, init_state, state_shardings, train_step_fn
from jaxprune.train.tasks import classification_stats, model_fn, supervised_loss, task_loss

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "LoopConfig",
    "MeshMismatchError",
    "NonFiniteError",
    "Sharding",
    "TrainState",
    "classification_stats",
    "distributed",
    "fit",
    "init_state",
    "make_mesh",
    "mask_history",
    "model_fn",
    "state_shardings",
    "supervised_loss",
    "task_loss",
    "train_step_fn",
]
