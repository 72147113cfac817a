"""The training loop: steps, logs, evaluation, checkpoints, preemption and resumption.

``fit`` drives a jitted train step over a deterministic batch stream. Everything a resumed
run needs is in its checkpoint (train state with RNG, optionally the teacher, and the data
position), so an interrupted run ends bit-identical to an uninterrupted one. Only process 0
writes logs; every process takes part in checkpointing (orbax writes each host's shards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import shutil
import signal
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxprune import masks as masks_lib
from jaxprune.optim import check as check_pruning
from jaxprune.optim import masks_of
from jaxprune.train import mask_history
from jaxprune.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # under each run folder
#: What :func:`fit` writes into a run folder (``restart=True`` deletes them first).
RUN_FILES = (
    CHECKPOINT_DIR,
    "config.json",
    "metrics.jsonl",
    "log.txt",
    "tensorboard",
    "sparsity_report.txt",
    "dev_metrics.json",
    mask_history.DIR,
)
_FRESH = (
    "to start fresh, pass restart=True (jaxprune train: --restart), which deletes its "
    "checkpoints and results, or choose another run folder"
)


class NonFiniteError(FloatingPointError):
    """The loss or gradients became NaN or infinite."""


class RunConfigError(ValueError):
    """A run folder holds checkpoints of a different (or unrecorded) config."""


def has_checkpoint(run_dir: str | pathlib.Path) -> bool:
    """Whether ``run_dir`` holds a finished checkpoint (a step folder under checkpoints/)."""
    root = pathlib.Path(run_dir) / CHECKPOINT_DIR
    managers = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    return any(step.name.isdigit() for d in managers for step in d.iterdir())


def _flat(config: dict) -> dict[str, Any]:
    """``config`` as JSON reads it back (tuples as lists), nested dicts as dotted keys."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = node

    walk(json.loads(json.dumps(config, default=str)), "")
    return out


def check_resumable(
    run_dir: str | pathlib.Path,
    resolved_config: dict,
    may_differ: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Refuses to resume checkpoints that another config wrote.

    A folder without a checkpoint passes. Otherwise its ``config.json`` must equal
    ``resolved_config`` (compared as JSON) except in the top-level keys ``may_differ``; a
    top-level key the saved config lacks counts as its value in ``defaults`` (a setting
    added after the run was written, at the value that run had).

    Raises:
      RunConfigError: naming every differing key with its saved and new value, or saying
        that the folder has checkpoints but no readable config.json.
    """
    run_dir = pathlib.Path(run_dir)
    if not has_checkpoint(run_dir):
        return
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunConfigError(
            f"{run_dir} holds checkpoints but no config.json, so nothing says which config "
            f"they were trained with; {_FRESH}"
        )
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunConfigError(f"{path} is not valid JSON ({err}); {_FRESH}") from err
    added = {k: v for k, v in (defaults or {}).items() if k not in saved}
    old, new = _flat({**added, **saved}), _flat(resolved_config)
    absent = "(absent)"
    changed = [
        f"{key}: {old.get(key, absent)!r} -> {new.get(key, absent)!r}"
        for key in sorted(old.keys() | new.keys())
        if key.split(".")[0] not in may_differ and old.get(key, absent) != new.get(key, absent)
    ]
    if changed:
        raise RunConfigError(
            f"{run_dir} holds checkpoints of a different config ({'; '.join(changed)}); "
            f"resuming would continue that run and return its result; {_FRESH}"
        )


def clear_run(run_dir: str | pathlib.Path, names: Iterable[str] = RUN_FILES) -> None:
    """Deletes the files or folders ``names`` of ``run_dir`` (process 0; the others wait)."""
    run_dir = pathlib.Path(run_dir)
    if jax.process_index() == 0:
        for name in names:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"jaxprune clear_run {run_dir}")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int  # total optimizer steps
    steps_per_epoch: int  # batches per epoch of the stream
    log_every: int = 10
    eval_every: int | None = None  # None: evaluate only at the end (if an evaluator is given)
    checkpoint_every: int = 100
    keep: int = 2  # latest checkpoints kept
    best_metric: str | None = None  # dev metric that selects the best checkpoint
    best_mode: str = "max"
    progress: bool = True
    masks_every: int | None = None  # save the masks every this many steps (mask_history)


Batches = Callable[[int, int], Iterator[dict]]  # (epoch, start_index) -> global batches


def _examples(batch: dict) -> int:
    """Real examples in a batch: its ``valid`` count (packed or padded batches), else rows."""
    if isinstance(batch, dict) and "valid" in batch:
        return int(jax.numpy.sum(batch["valid"]))
    return len(next(iter(jax.tree.leaves(batch))))


class _Logger:
    """JSON lines, TensorBoard and ``log.txt`` (the jaxprune logs) on process 0 only."""

    def __init__(self, run_dir: pathlib.Path):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        self.jsonl = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        self.text = logging.FileHandler(run_dir / "log.txt")
        self.text.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("jaxprune")
        root.addHandler(self.text)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, scope: str, values: dict) -> None:
        if not self.active:
            return
        clean = {
            k: float(v) for k, v in values.items() if not isinstance(v, str) and np.ndim(v) == 0
        }
        self.jsonl.write(json.dumps({"step": step, "scope": scope, **clean}) + "\n")
        self.jsonl.flush()
        for key, value in clean.items():
            self.tb.add_scalar(f"{scope}/{key}", value, step)

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tb.close()
            logging.getLogger("jaxprune").removeHandler(self.text)
            self.text.close()


class _Preemption:
    """Says after every step whether to save and stop because of a preemption notice.

    One process: a SIGTERM handler sets a flag. Several processes (``jax.distributed``):
    JAX's preemption service listens for SIGTERM on every host and agrees on one step for all
    of them (``reached_preemption_sync_point``), so every host saves the same step and none
    waits on a collective the others never join. The service needs a call at every step.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._agreed = jax.process_count() > 1

    def __enter__(self):
        if not self._agreed:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not in the main thread: no handler, no preemption saves
                self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def reached(self, step: int) -> bool:
        """Whether to save ``step`` and stop; call once after every step, on every host."""
        if not self._agreed:
            return self.requested
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # the service is off (jax_enable_preemption_service=False)
            log.warning("JAX's preemption service is off: SIGTERM saves no checkpoint")
            self._agreed = False  # and no handler was installed: no more stops
            return False

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _masks_every(config: LoopConfig, opt_state: Any) -> int | None:
    """``config.masks_every``, or None (with a warning) where no ``masked_optimizer`` keeps
    masks (learned-score methods derive theirs from the scores)."""
    if not config.masks_every:
        return None
    try:
        masks_of(opt_state)
    except ValueError:
        log.warning("masks_every: no masked_optimizer in this run's state; no masks saved")
        return None
    return config.masks_every


def _current_sparsity(opt_state: Any) -> float | None:
    try:
        return float(masks_lib.sparsity(masks_of(opt_state)))
    except ValueError:
        return None


def fit(
    *,
    run_dir: str | pathlib.Path,
    config: LoopConfig,
    state: Any,
    train_step: Callable[[Any, dict, Any], tuple[Any, dict]],
    batches: Batches,
    evaluate: Callable[[Any], dict] | None = None,
    teacher: Any = None,
    update_teacher: Callable[[Any, Any, dict | None], Any] | None = None,
    resolved_config: dict | None = None,
    export: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    may_differ: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
    restart: bool = False,
) -> tuple[Any, Any]:
    """Trains ``state`` for ``config.steps`` steps, resuming from ``run_dir`` if it holds a
    checkpoint of the same ``resolved_config``.

    Args:
      run_dir: run directory (config.json, metrics.jsonl, tensorboard/, checkpoints/,
        sparsity_report.txt).
      state: the initial train state (placed on devices); its shape, dtype and sharding
        are also the restore target.
      train_step: jitted ``(state, batch, teacher) -> (state, metrics)``.
      batches: ``(epoch, start) -> iterator`` of global batches of one epoch, from batch
        ``start`` on; must be deterministic in (epoch, start).
      evaluate: ``params -> dict`` of dev metrics, called every ``eval_every`` steps.
      teacher: frozen pytree passed to the step (checkpointed with the state when
        ``update_teacher`` can change it).
      update_teacher: ``(state, teacher, dev) -> teacher``, called after every step; ``dev``
        holds the metrics on evaluation steps and is None otherwise (self-regularization).
      resolved_config: written to ``run_dir/config.json``; a checkpoint in ``run_dir`` is
        resumed only if the config.json beside it is the same (see :func:`check_resumable`).
        None: no config is written or compared.
      export: ``(trainable, opt_state) -> (params, masks)`` for the final sparsity report
        (a method's ``export``); default: the params and the ``masked_optimizer`` masks.
      may_differ: keys of ``resolved_config`` that do not change the result: a checkpoint
        whose config differs only in them is resumed.
      defaults: values of settings newer than a saved config.json (see
        :func:`check_resumable`).
      restart: delete what an earlier run left in ``run_dir`` (:data:`RUN_FILES`) and start
        from step 0.

    Returns:
      ``(state, teacher)`` after the last step.

    Raises:
      NonFiniteError: the loss or gradients are not finite (step and last checkpoint named).
      RunConfigError: ``run_dir`` holds checkpoints of another config (before anything in
        it is written).
      jaxprune.failure.PruningError: a ``masked_optimizer`` in the state refused a mask
        update (checked after every step: training froze at that step).
      CheckpointError: a checkpoint in ``run_dir`` cannot be restored.
    """
    run_dir = pathlib.Path(run_dir)
    if restart:
        clear_run(run_dir)
    elif resolved_config is not None:
        check_resumable(run_dir, resolved_config, may_differ, defaults)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resolved_config is not None and jax.process_index() == 0:
        (run_dir / "config.json").write_text(json.dumps(resolved_config, indent=2, default=str))
    ckpt = Checkpointer(
        run_dir / CHECKPOINT_DIR,
        every=config.checkpoint_every,
        keep=config.keep,
        best_metric=config.best_metric,
        best_mode=config.best_mode,
    )

    def bundle(s, t):
        return {"train": s} if update_teacher is None else {"train": s, "teacher": t}

    start = 0
    if ckpt.latest_step() is not None:
        restored, position = ckpt.restore(bundle(state, teacher))
        state, start = restored["train"], int(position["step"])
        teacher = restored.get("teacher", teacher)
        log.info("resumed from %s at step %d", run_dir / CHECKPOINT_DIR, start)

    logger = _Logger(run_dir)
    bar = tqdm(
        total=config.steps,
        initial=start,
        unit="step",
        disable=not config.progress or jax.process_index() != 0,
        dynamic_ncols=True,
    )
    step, window_start, window_steps, examples = start, time.perf_counter(), 0, 0
    masks_every = _masks_every(config, state.opt_state)
    dev: dict = {}
    try:
        with _Preemption() as preemption:
            while step < config.steps:
                epoch, index = divmod(step, config.steps_per_epoch)
                for batch in batches(epoch, index):
                    state, metrics = train_step(state, batch, teacher)
                    step += 1
                    window_steps += 1
                    examples += _examples(batch)
                    position = {"step": step}
                    if not bool(metrics["finite"]):
                        last = ckpt.latest_step()
                        where = "none" if last is None else ckpt.latest.directory / str(last)
                        raise NonFiniteError(
                            f"non-finite loss or gradients at step {step - 1} "
                            f"(loss={float(metrics['loss'])}); last good checkpoint: {where}"
                        )
                    check_pruning(state.opt_state)  # a refused mask update froze training
                    if masks_every and step % masks_every == 0:
                        mask_history.save(run_dir, step, masks_of(state.opt_state))
                    if step % config.log_every == 0 or step == config.steps:
                        elapsed = time.perf_counter() - window_start
                        values = {k: v for k, v in metrics.items() if k != "finite"}
                        values["steps_per_s"] = window_steps / max(elapsed, 1e-9)
                        values["examples_per_s"] = examples / max(elapsed, 1e-9)
                        sparsity = _current_sparsity(state.opt_state)
                        if sparsity is not None:
                            values["sparsity"] = sparsity
                        logger.write(step, "train", values)
                        bar.set_postfix(
                            loss=f"{float(metrics['loss']):.4f}",
                            sparsity="-" if sparsity is None else f"{sparsity:.1%}",
                            it_s=f"{values['steps_per_s']:.2f}",
                        )
                        window_start, window_steps, examples = time.perf_counter(), 0, 0
                    bar.update(1)
                    due_eval = (
                        config.eval_every and step % config.eval_every == 0
                    ) or step == config.steps
                    if evaluate is not None and due_eval:
                        dev = evaluate(state.params)
                        logger.write(step, "dev", dev)
                        if config.best_metric is not None:
                            ckpt.save_best(step, bundle(state, teacher), position, dev)
                        if update_teacher is not None:
                            teacher = update_teacher(state, teacher, dev)
                    elif update_teacher is not None:
                        teacher = update_teacher(state, teacher, None)
                    stop = preemption.reached(step)
                    last = stop or step == config.steps
                    ckpt.save(step, bundle(state, teacher), position, force=last)
                    if stop:
                        ckpt.wait()
                        log.warning("SIGTERM: saved step %d to %s; exiting", step, run_dir)
                        raise SystemExit(143)
                    if step >= config.steps:
                        break
    finally:
        bar.close()
        ckpt.wait()
        ckpt.close()
        logger.close()
    if jax.process_index() == 0:
        if export is not None:
            params, masks = jax.device_get(export(state.params, state.opt_state))
        else:
            params, masks = jax.device_get(state.params), None
            with contextlib.suppress(ValueError):  # no masked_optimizer: report non-zeros
                masks = masks_of(state.opt_state)
        report = masks_lib.sparsity_report(params, masks)
        (run_dir / "sparsity_report.txt").write_text(str(report) + "\n")
        if dev:
            (run_dir / "dev_metrics.json").write_text(json.dumps(dev, indent=2, default=float))
    return state, teacher


__all__ = [
    "CHECKPOINT_DIR",
    "RUN_FILES",
    "Batches",
    "LoopConfig",
    "NonFiniteError",
    "RunConfigError",
    "check_resumable",
    "clear_run",
    "fit",
    "has_checkpoint",
]
