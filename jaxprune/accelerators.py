"""Accelerator chips from their public spec sheets, and step-time projections on them.

A projection is a roofline: a step takes the longer of its FLOPs at ``utilization`` x the
chip's peak and its bytes accessed at ``utilization`` x its HBM bandwidth. With XLA:CPU's
cost analysis (as ``jaxprune plan`` uses) the bytes count every operation the CPU compiler
leaves unfused, so a bytes-bound projection is an upper bound for TPU and GPU. Peaks are those
that apply to float32 inputs as JAX runs them by default: TPUs multiply float32 in one
bfloat16 pass (``precision=DEFAULT``), so their bfloat16 peak; NVIDIA GPUs use TF32 tensor
cores, so their dense TF32 peak (not the 2:4-sparsity figure). Memory is per chip; one chip
is one JAX device (a TPU v4 chip's two TensorCores form one megacore device).
"""

from __future__ import annotations

from typing import NamedTuple

GiB = 2**30


class Accelerator(NamedTuple):
    """One chip: ``peak_flops`` (FLOP/s), ``hbm_bytes``, ``hbm_bandwidth`` (bytes/s)."""

    name: str
    peak_flops: float
    hbm_bytes: int
    hbm_bandwidth: float
    source: str


#: Spec-sheet figures (cloud.google.com/tpu/docs/v4, /v5e, /v5p; NVIDIA H100 SXM and A100
#: SXM 80GB datasheets).
ACCELERATORS = {
    a.name: a
    for a in (
        Accelerator("tpu-v4", 275e12, 32 * GiB, 1200e9, "TPU v4: 275 TFLOP/s bf16, 32 GiB HBM2"),
        Accelerator("tpu-v5e", 197e12, 16 * GiB, 819e9, "TPU v5e: 197 TFLOP/s bf16, 16 GiB HBM2"),
        Accelerator("tpu-v5p", 459e12, 95 * GiB, 2765e9, "TPU v5p: 459 TFLOP/s bf16, 95 GiB HBM2e"),
        Accelerator("h100", 494.5e12, 80 * 10**9, 3.35e12, "H100 SXM: 494.5 TFLOP/s TF32, 80 GB"),
        Accelerator("a100", 156e12, 80 * 10**9, 2.039e12, "A100 SXM 80GB: 156 TFLOP/s TF32"),
    )
}

#: The share of HBM a run may plan to use: XLA's runtime, fragmentation and the collectives'
#: buffers take the rest.
USABLE_HBM = 0.9


def step_seconds(
    flops: float, bytes_accessed: float, chip: Accelerator, utilization: float = 0.4
) -> float:
    """Projected seconds of one per-device program: roofline at ``utilization``."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    return max(flops / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth) / utilization


def fits(peak_bytes: float, chip: Accelerator) -> bool:
    """Whether a per-device peak fits the chip's usable HBM (:data:`USABLE_HBM`)."""
    return peak_bytes <= USABLE_HBM * chip.hbm_bytes


def largest_batch(fixed_bytes: float, bytes_per_example: float, chip: Accelerator) -> int:
    """The most examples per device that fit, for memory ``fixed + n x per_example``; 0 when
    even the fixed part does not fit."""
    room = USABLE_HBM * chip.hbm_bytes - fixed_bytes
    if room < 0:
        return 0
    return int(room // bytes_per_example) if bytes_per_example > 0 else 10**9


__all__ = [
    "ACCELERATORS",
    "USABLE_HBM",
    "Accelerator",
    "GiB",
    "fits",
    "largest_batch",
    "step_seconds",
]
