"""Accelerator catalogue: GPU types and TPU slice shapes, as pure data.

Names follow what GKE puts on nodes (``cloud.google.com/gke-accelerator``,
``cloud.google.com/gke-tpu-accelerator``) and what Ray calls the same hardware
(``accelerator_type``), so renderers never guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuType:
    gke_label: str
    ray_accelerator_type: str
    memory_gib: int


GPU_TYPES: dict[str, GpuType] = {
    "nvidia-tesla-t4": GpuType("nvidia-tesla-t4", "T4", 16),
    "nvidia-l4": GpuType("nvidia-l4", "L4", 24),
    "nvidia-tesla-a100": GpuType("nvidia-tesla-a100", "A100", 40),
    "nvidia-a100-80gb": GpuType("nvidia-a100-80gb", "A100", 80),
    "nvidia-h100-80gb": GpuType("nvidia-h100-80gb", "H100", 80),
    "nvidia-h100-mega-80gb": GpuType("nvidia-h100-mega-80gb", "H100", 80),
    "nvidia-h200-141gb": GpuType("nvidia-h200-141gb", "H200", 141),
}

# Short names people type; each maps to exactly one GKE label.
GPU_ALIASES: dict[str, str] = {
    "nvidia-t4": "nvidia-tesla-t4",
    "nvidia-a100": "nvidia-tesla-a100",
    "nvidia-h100": "nvidia-h100-80gb",
    "nvidia-h200": "nvidia-h200-141gb",
}


def gpu_type(name: str) -> GpuType:
    key = GPU_ALIASES.get(name, name)
    if key not in GPU_TYPES:
        known = ", ".join(sorted({*GPU_TYPES, *GPU_ALIASES}))
        raise ValueError(f"unknown GPU type {name!r}; known: {known}")
    return GPU_TYPES[key]


@dataclass(frozen=True)
class TpuVersion:
    gke_accelerator: str
    ray_accelerator_type: str
    dims: int  # 3 for v4's 3-D torus, 2 for v5e/v6e
    chips_per_host: int  # on multi-host slices
    max_single_host_chips: int  # largest slice that fits one host


TPU_VERSIONS: dict[str, TpuVersion] = {
    "v4": TpuVersion("tpu-v4-podslice", "TPU-V4", 3, 4, 4),
    "v5e": TpuVersion("tpu-v5-lite-podslice", "TPU-V5LITEPOD", 2, 4, 8),
    "v6e": TpuVersion("tpu-v6e-slice", "TPU-V6E", 2, 4, 8),
}


@dataclass(frozen=True)
class TpuSlice:
    """One TPU slice: what a KubeRay worker-group replica is on TPU."""

    version: str
    topology: str
    chips: int
    hosts: int
    chips_per_host: int

    @property
    def gke_accelerator(self) -> str:
        return TPU_VERSIONS[self.version].gke_accelerator

    @property
    def ray_accelerator_type(self) -> str:
        return TPU_VERSIONS[self.version].ray_accelerator_type


def tpu_slice(version: str, topology: str) -> TpuSlice:
    """Hosts and chips of a slice, as GKE provisions it.

    v5e/v6e slices of up to 8 chips sit on one host (2x4 is one 8-chip host);
    larger ones use 4-chip hosts (4x4 is 4 hosts of 4). v4 always has 4 chips
    per host (2x2x2 is 2 hosts).
    """
    if version not in TPU_VERSIONS:
        raise ValueError(f"unknown TPU version {version!r}; known: {', '.join(TPU_VERSIONS)}")
    info = TPU_VERSIONS[version]
    parts = topology.lower().split("x")
    if len(parts) != info.dims or not all(p.isdigit() and int(p) > 0 for p in parts):
        shape = "x".join(["N"] * info.dims)
        raise ValueError(f"TPU {version} topology must look like {shape}, got {topology!r}")
    chips = math.prod(int(p) for p in parts)
    if chips <= info.max_single_host_chips:
        return TpuSlice(version, topology, chips, 1, chips)
    if chips % info.chips_per_host:
        raise ValueError(
            f"TPU {version} topology {topology!r} has {chips} chips, "
            f"not a multiple of {info.chips_per_host} chips per host"
        )
    return TpuSlice(version, topology, chips, chips // info.chips_per_host, info.chips_per_host)
