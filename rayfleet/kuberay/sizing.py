"""How big each Ray pod is: CPU, memory and accelerator requests per host.

Requests equal limits (Guaranteed QoS), as the KubeRay docs recommend: KubeRay
derives Ray's ``num-cpus``/``memory``/``num-gpus`` from the container limits, so
what Kubernetes reserves and what Ray schedules against stay the same numbers.

The CPU and memory figures are per-host shares of the GKE machine types that
carry each accelerator, rounded down to leave room for system pods. They are
sizing defaults, not measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rayfleet.platform.accelerators import gpu_type, tpu_slice
from rayfleet.platform.plan import Engine, Group
from rayfleet.platform.spec import CpuAccelerator, GpuAccelerator, TpuAccelerator

GPU_RESOURCE = "nvidia.com/gpu"
TPU_RESOURCE = "google.com/tpu"

# Per GPU: (vCPU, GiB) — a share of the GKE machine family that hosts the GPU.
GPU_HOST_SHARE: dict[str, tuple[int, int]] = {
    "nvidia-tesla-t4": (6, 24),  # n1-standard-8 + T4
    "nvidia-l4": (6, 24),  # g2-standard-8: 8 vCPU, 32 GB per L4
    "nvidia-tesla-a100": (10, 64),  # a2-highgpu-1g: 12 vCPU, 85 GB
    "nvidia-a100-80gb": (10, 128),  # a2-ultragpu-1g: 12 vCPU, 170 GB
    "nvidia-h100-80gb": (20, 200),  # a3-highgpu-8g: 208 vCPU, 1872 GB for 8
    "nvidia-h100-mega-80gb": (20, 200),  # a3-megagpu-8g: same per-GPU share
    "nvidia-h200-141gb": (24, 320),  # a3-ultragpu-8g: 224 vCPU, 2952 GB for 8
}

# Per TPU host, by chips on that host: (vCPU, GiB).
TPU_HOST_SHAPES: dict[str, dict[int, tuple[int, int]]] = {
    "v4": {4: (200, 350)},  # ct4p-hightpu-4t: 240 vCPU, 407 GB
    "v5e": {1: (20, 40), 4: (100, 160), 8: (200, 320)},  # ct5lp-hightpu-{1,4,8}t
    "v6e": {1: (40, 160), 4: (160, 640), 8: (160, 1280)},  # ct6e-standard-{1,4,8}t
}

HEAD_CPUS = 4
HEAD_MEMORY_GIB = 16
CPU_ENGINE_OVERHEAD_CPUS = 1  # raylet, proxy and the replica actor next to the engine
CPU_ENGINE_OVERHEAD_GIB = 4.0  # weights, activations and the Python runtime


@dataclass(frozen=True)
class HostShape:
    """What one Ray pod (one host) asks Kubernetes for."""

    cpus: int
    memory_gib: int
    accelerators: dict[str, int]  # extended resources such as nvidia.com/gpu

    def resource_list(self) -> dict[str, str]:
        resources = {"cpu": str(self.cpus), "memory": f"{self.memory_gib}Gi"}
        resources.update({name: str(count) for name, count in self.accelerators.items()})
        return resources

    def requirements(self) -> dict[str, dict[str, str]]:
        return {"requests": self.resource_list(), "limits": self.resource_list()}


def head_shape() -> HostShape:
    return HostShape(cpus=HEAD_CPUS, memory_gib=HEAD_MEMORY_GIB, accelerators={})


def _gpu_shape(acc: GpuAccelerator) -> HostShape:
    cpus, memory_gib = GPU_HOST_SHARE[gpu_type(acc.type).gke_label]
    return HostShape(cpus * acc.count, memory_gib * acc.count, {GPU_RESOURCE: acc.count})


def _tpu_shape(acc: TpuAccelerator) -> HostShape:
    chips = tpu_slice(acc.version, acc.topology).chips_per_host
    shapes = TPU_HOST_SHAPES[acc.version]
    # The smallest machine with enough chips; a slice never spans more than one per host.
    fitting = min((n for n in shapes if n >= chips), default=max(shapes))
    cpus, memory_gib = shapes[fitting]
    return HostShape(cpus, memory_gib, {TPU_RESOURCE: chips})


def _cpu_shape(engines: list[Engine]) -> HostShape:
    """One CPU worker pod holds one engine replica; size it for the largest engine."""
    accs = [e.pool.accelerator for e in engines if isinstance(e.pool.accelerator, CpuAccelerator)]
    cpus = max((a.cpus for a in accs), default=1) + CPU_ENGINE_OVERHEAD_CPUS
    kv_gib = max((a.kv_cache_gib for a in accs), default=1)
    return HostShape(cpus, math.ceil(kv_gib + CPU_ENGINE_OVERHEAD_GIB), {})


def host_shape(group: Group, engines: list[Engine]) -> HostShape:
    """The pod size of every host in ``group``; ``engines`` are the ones placed on it."""
    acc = group.accelerator
    if isinstance(acc, GpuAccelerator):
        return _gpu_shape(acc)
    if isinstance(acc, TpuAccelerator):
        return _tpu_shape(acc)
    return _cpu_shape(engines)
