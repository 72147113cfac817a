"""Orbax checkpoints of the whole train state plus the data position.

Two managers under the run directory: ``checkpoints/latest`` keeps the last ``keep`` saves
(every ``every`` steps, and on demand, e.g. at SIGTERM), ``checkpoints/best`` keeps the
single best by a dev metric. Saves are asynchronous; a half-written save is never
restored (orbax finalises atomically). A checkpoint that cannot be restored into the
expected state raises :class:`CheckpointError`: a run never silently starts fresh.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxprune import paths


class CheckpointError(RuntimeError):
    """A checkpoint exists but is corrupted or does not fit this run."""


def abstract(state: Any) -> Any:
    """Shape, dtype and sharding of every leaf, for restoring into the same layout."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state,
    )


class Checkpointer:
    """Saves and restores ``(state, position)``; ``position`` is a small JSON dict
    (epoch, batch index within the epoch) that lets the data stream resume exactly."""

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        every: int,
        keep: int = 2,
        best_metric: str | None = None,
        best_mode: str = "max",
        asynchronous: bool = True,
    ):
        root = pathlib.Path(directory).absolute()
        self.best_metric = best_metric
        common = dict(enable_async_checkpointing=asynchronous, create=True)
        self.latest = ocp.CheckpointManager(
            root / "latest",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=every, **common
            ),
        )
        self.best = None
        if best_metric is not None:
            self.best = ocp.CheckpointManager(
                root / "best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1,
                    best_fn=lambda metrics: float(metrics[best_metric]),
                    best_mode=best_mode,
                    **common,
                ),
            )

    @staticmethod
    def _args(state: Any, position: dict) -> ocp.args.Composite:
        return ocp.args.Composite(
            state=ocp.args.StandardSave(state), position=ocp.args.JsonSave(position)
        )

    def save(self, step: int, state: Any, position: dict, *, force: bool = False) -> bool:
        """Saves into ``latest`` when ``step`` is due (or ``force``); returns whether it did."""
        return self.latest.save(step, args=self._args(state, position), force=force)

    def save_best(self, step: int, state: Any, position: dict, metrics: dict) -> None:
        """Offers a checkpoint scored by ``metrics[best_metric]``; kept if it is the best."""
        if self.best is not None:
            self.best.save(step, args=self._args(state, position), metrics=metrics, force=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, target: Any, step: int | None = None, *, best: bool = False):
        """Restores ``(state, position)`` shaped and sharded like ``target``.

        Raises:
          CheckpointError: no checkpoint, or it is corrupted or incompatible.
        """
        manager = self.best if best else self.latest
        if manager is None:
            raise CheckpointError("no best checkpoint is kept: best_metric was not set")
        step = (
            manager.best_step() if best else (step if step is not None else manager.latest_step())
        )
        if step is None:
            raise CheckpointError(f"no checkpoint in {manager.directory}")
        try:
            out = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract(target)),
                    position=ocp.args.JsonRestore(),
                ),
            )
        except Exception as err:
            raise CheckpointError(
                f"cannot restore {manager.directory}/{step}: {type(err).__name__}: {err}. "
                f"The checkpoint is corrupted or was written by a different model or "
                f"optimizer; delete it or choose another run directory (not starting fresh)."
            ) from err
        self._check_tree(target, out.state, f"{manager.directory}/{step}")
        return out.state, dict(out.position)

    @staticmethod
    def _check_tree(target: Any, restored: Any, where: str) -> None:
        if not paths.same_treedef(jax.tree.structure(target), jax.tree.structure(restored)):
            raise CheckpointError(f"{where} holds a differently structured state than this run")

    def wait(self) -> None:
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "abstract",
]
