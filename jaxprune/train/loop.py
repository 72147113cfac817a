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
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxprune import masks as masks_lib
from jaxprune.optim import masks_of
from jaxprune.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # under each run folder


class NonFiniteError(FloatingPointError):
    """The loss or gradients became NaN or infinite."""


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
) -> tuple[Any, Any]:
    """Trains ``state`` for ``config.steps`` steps, resuming from ``run_dir`` if it holds a
    checkpoint.

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
      resolved_config: written to ``run_dir/config.json``.
      export: ``(trainable, opt_state) -> (params, masks)`` for the final sparsity report
        (a method's ``export``); default: the params and the ``masked_optimizer`` masks.

    Returns:
      ``(state, teacher)`` after the last step.

    Raises:
      NonFiniteError: the loss or gradients are not finite (step and last checkpoint named).
      CheckpointError: a checkpoint in ``run_dir`` cannot be restored.
    """
    run_dir = pathlib.Path(run_dir)
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
