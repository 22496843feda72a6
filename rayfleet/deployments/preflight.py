"""Checks a replica runs before it starts its engine. Pure logic, testable anywhere."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol


class PreflightError(RuntimeError):
    """The hardware under a replica is not what the spec asked for."""


class TpuDevice(Protocol):
    device_kind: str


# What jax reports as device_kind for each TPU generation.
TPU_DEVICE_KINDS = {
    "v4": ("TPU v4",),
    "v5e": ("TPU v5 lite", "TPU v5e"),
    "v6e": ("TPU v6 lite", "TPU v6e"),
}


def check_tpu_devices(devices: Sequence[TpuDevice], version: str, chips: int) -> None:
    """Fail clearly when the slice's chips don't match the spec's version and count."""
    expected_kinds = TPU_DEVICE_KINDS[version]
    kinds = sorted({d.device_kind for d in devices})
    wrong = [k for k in kinds if not k.startswith(expected_kinds)]
    if not devices or wrong:
        seen = ", ".join(kinds) or "no TPU devices"
        raise PreflightError(f"spec asks for TPU {version} but this replica sees {seen}")
    if len(devices) != chips:
        raise PreflightError(
            f"spec asks for a TPU {version} slice of {chips} chips but jax.devices() "
            f"shows {len(devices)}; check the worker group's topology and numOfHosts"
        )


def check_tpu_with_jax(expectation: str) -> None:
    """``expectation`` is ``"<version>:<chips>"``, as the LLMConfig renderer sets it."""
    version, chips = expectation.split(":")
    try:
        import jax
    except ImportError as error:
        raise PreflightError("TPU replica without jax installed: use the vllm-tpu image") from error
    check_tpu_devices(jax.devices(), version, int(chips))


def cpu_bind(core_offset: int, cpus_per_engine: int, rank: int, cores: int) -> str:
    """The cores one CPU engine pins its OpenMP threads to, distinct per engine.

    Engines are numbered by deployment offset plus replica rank, wrapping around
    the node's cores when there are more engines than cores.
    """
    first = (core_offset + rank * cpus_per_engine) % cores
    picked = [(first + i) % cores for i in range(min(cpus_per_engine, cores))]
    return ",".join(str(c) for c in sorted(picked))


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
