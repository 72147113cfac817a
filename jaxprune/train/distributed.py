"""Multi-process start-up: ``jax.distributed`` with a bounded wait on a dead process.

JAX's coordination service (hosted by process 0) expects a heartbeat from every process.
When a process dies (killed, out of memory, lost host), the others would otherwise wait in
their next collective forever; once its heartbeats have been missing for
``heartbeat_timeout_s`` the service ends every other process, non-zero, with
``Terminating process because the JAX distributed service detected fatal errors. This most
likely indicates that another task died`` and ``The following tasks are unhealthy (stopped
sending heartbeats): <process ids>``. Restart the run: it resumes from its last checkpoint.
"""

from __future__ import annotations

import logging

import jax

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_S = 100  # JAX's default


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
) -> None:
    """Joins this process to the run (``jax.distributed.initialize``); call it before any
    other JAX call. All of ``coordinator``, ``num_processes`` and ``process_id`` None: JAX
    detects them (TPU pods, SLURM, Open MPI).

    Args:
      coordinator: ``host:port`` of process 0's coordination service.
      num_processes: processes in the run.
      process_id: this process's index, in ``[0, num_processes)``.
      heartbeat_timeout_s: seconds without heartbeats after which a process counts as dead
        and every other process exits with the message in this module's docstring.

    Raises:
      ValueError: some but not all of the three are given, or ``heartbeat_timeout_s < 1``.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("coordinator, num_processes and process_id go together")
    if heartbeat_timeout_s < 1:
        raise ValueError(f"heartbeat_timeout_s must be >= 1 second, got {heartbeat_timeout_s}")
    jax.distributed.initialize(
        coordinator, num_processes, process_id, heartbeat_timeout_seconds=heartbeat_timeout_s
    )
    log.info(
        "process %d of %d joined; a process silent for %d s ends the run",
        jax.process_index(),
        jax.process_count(),
        heartbeat_timeout_s,
    )


__all__ = [
    "HEARTBEAT_TIMEOUT_S",
    "initialize",
]
