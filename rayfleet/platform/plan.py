"""Spec → resolved plan: which engines exist, on which accelerator group.

The plan is what every renderer reads. Nothing downstream looks at the spec's
pools directly, so the grouping and naming rules live only here.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayfleet.platform.accelerators import gpu_type, tpu_slice
from rayfleet.platform.spec import (
    CpuAccelerator,
    GpuAccelerator,
    Model,
    Pool,
    Role,
    Spec,
    TpuAccelerator,
)

GROUP_LABEL = "rayfleet.io/group"


@dataclass(frozen=True)
class Group:
    """An accelerator group: one KubeRay worker group, one Ray node type."""

    name: str
    accelerator: CpuAccelerator | GpuAccelerator | TpuAccelerator
    hosts_per_replica: int  # > 1 only for multi-host TPU slices
    min_replicas: int
    max_replicas: int

    @property
    def kind(self) -> str:
        return self.accelerator.kind

    def ray_resources_per_host(self) -> dict[str, float]:
        """Custom Ray resources each host of this group advertises (besides CPU/GPU)."""
        acc = self.accelerator
        if isinstance(acc, TpuAccelerator):
            return {"TPU": float(tpu_slice(acc.version, acc.topology).chips_per_host)}
        return {}

    def labels(self) -> dict[str, str]:
        """Ray node labels every host of this group carries."""
        labels = {GROUP_LABEL: self.name}
        acc = self.accelerator
        if isinstance(acc, GpuAccelerator):
            labels["ray.io/accelerator-type"] = gpu_type(acc.type).ray_accelerator_type
        elif isinstance(acc, TpuAccelerator):
            tpu = tpu_slice(acc.version, acc.topology)
            labels["ray.io/accelerator-type"] = tpu.ray_accelerator_type
            labels["ray.io/tpu-topology"] = acc.topology
        return labels


@dataclass(frozen=True)
class Engine:
    """One engine deployment: a model's pool, placed on a group."""

    model: Model
    role: Role
    pool: Pool
    group: Group
    cpu_core_offset: int  # first core of this deployment's engines on a shared host

    @property
    def deployment_name(self) -> str:
        return f"{self.model.id}-{self.role}"


@dataclass(frozen=True)
class Plan:
    spec: Spec
    engines: tuple[Engine, ...]
    groups: tuple[Group, ...]

    @property
    def places_by_group(self) -> bool:
        """Engines need label selectors only when there is more than one group."""
        return len(self.groups) > 1

    @property
    def engine_in_ingress(self) -> bool:
        """One model on one fixed unified replica behind one ingress replica: nothing to
        route, so the engine runs inside the ingress replica (no Serve hop between)."""
        if len(self.engines) != 1 or self.spec.http.ingress_replicas != 1:
            return False
        (engine,) = self.engines
        pool = engine.pool
        return engine.role == "unified" and pool.autoscaling is None and pool.max_replicas == 1

    def engines_of(self, model_id: str) -> list[Engine]:
        return [e for e in self.engines if e.model.id == model_id]


def group_name(acc: CpuAccelerator | GpuAccelerator | TpuAccelerator, role: Role) -> str:
    """Pools on identical hardware share a group; split GPU/TPU pools get their own.

    CPU pools always share one group: CPU nodes are interchangeable, and a local
    cluster is a single node.
    """
    if isinstance(acc, CpuAccelerator):
        return "cpu"
    if isinstance(acc, GpuAccelerator):
        base = f"gpu-{acc.type}-x{acc.count}"
    else:
        base = f"tpu-{acc.version}-{acc.topology}"
    return base if role == "unified" else f"{base}-{role}"


def _hosts_per_replica(acc: CpuAccelerator | GpuAccelerator | TpuAccelerator) -> int:
    if isinstance(acc, TpuAccelerator):
        return tpu_slice(acc.version, acc.topology).hosts
    return 1


def resolve(spec: Spec) -> Plan:
    pending: dict[str, list[tuple[Model, Role, Pool]]] = {}
    for model in spec.models:
        for role, pool in model.pools.items():
            name = group_name(pool.accelerator, role)
            pending.setdefault(name, []).append((model, role, pool))

    groups: dict[str, Group] = {}
    for name, members in pending.items():
        first_pool = members[0][2]
        groups[name] = Group(
            name=name,
            accelerator=first_pool.accelerator,
            hosts_per_replica=_hosts_per_replica(first_pool.accelerator),
            min_replicas=sum(p.min_replicas for _, _, p in members),
            max_replicas=sum(p.max_replicas for _, _, p in members),
        )

    engines: list[Engine] = []
    core_offset = 0
    for model in spec.models:
        for role, pool in model.pools.items():
            group = groups[group_name(pool.accelerator, role)]
            engines.append(Engine(model, role, pool, group, core_offset))
            if isinstance(pool.accelerator, CpuAccelerator):
                core_offset += pool.accelerator.cpus * pool.max_replicas
    return Plan(spec=spec, engines=tuple(engines), groups=tuple(groups.values()))
