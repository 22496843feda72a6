"""Plan → KubeRay resources: a RayService whose RayCluster has one worker group per plan Group.

Pure functions returning plain dicts; nothing here talks to a cluster. The
RayService embeds exactly the RayCluster spec that ``render_raycluster`` returns,
so either resource can be applied and both validate against the same CRD rules.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from rayfleet.kuberay.pods import (
    DashboardHosts,
    app_labels,
    container_security_context,
    head_template,
    worker_template,
)
from rayfleet.kuberay.sizing import head_shape, host_shape
from rayfleet.platform.plan import Group, Plan

API_VERSION = "ray.io/v1"
RAY_VERSION = "2.60.0"  # the ray[serve] pin in pyproject.toml; KubeRay picks probe flavours by it
SPEC_DIGEST_LABEL = "rayfleet.io/spec-digest"
INCREMENTAL = "NewClusterWithIncrementalUpgrade"


@dataclass(frozen=True)
class IncrementalUpgrade:
    """``clusterUpgradeOptions`` for NewClusterWithIncrementalUpgrade (KubeRay >= 1.5.1).

    KubeRay needs a Gateway API GatewayClass to split traffic between the old and
    new cluster. ``max_surge_percent`` None means one worker replica's share of the
    cluster, the step KubeRay's guide recommends (so at most one extra slice or
    GPU pod exists during the upgrade); traffic then moves in steps of that size.
    """

    gateway_class_name: str = "istio"
    interval_seconds: int = 60
    max_surge_percent: int | None = None


@dataclass(frozen=True)
class RenderOptions:
    dashboard: DashboardHosts = field(default_factory=DashboardHosts)
    incremental_upgrade: IncrementalUpgrade = field(default_factory=IncrementalUpgrade)
    autoscaler_idle_timeout_s: int = 300  # engines take minutes to start; scale down slowly


def render_rayservice(
    plan: Plan, serve_config: dict[str, Any], options: RenderOptions | None = None
) -> dict[str, Any]:
    """The RayService: ``serve_config`` as serveConfigV2 over the plan's RayCluster."""
    options = options or RenderOptions()
    check_serve_config(plan, serve_config)
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": _metadata(plan),
        "spec": {
            "upgradeStrategy": _upgrade_strategy(plan, options.incremental_upgrade),
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": _cluster_spec(plan, options),
        },
    }


def render_raycluster(plan: Plan, options: RenderOptions | None = None) -> dict[str, Any]:
    """A standalone RayCluster with the same spec the RayService embeds."""
    return {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(plan),
        "spec": _cluster_spec(plan, options or RenderOptions()),
    }


def check_serve_config(plan: Plan, serve_config: dict[str, Any]) -> None:
    """Refuse a serve config the cluster cannot serve: wrong port or a loopback host."""
    if not isinstance(serve_config.get("applications"), list):
        raise ValueError("serve_config needs an `applications` list (Ray Serve deploy config)")
    http = serve_config.get("http_options") or {}
    port = http.get("port", plan.spec.http.port)
    if port != plan.spec.http.port:
        raise ValueError(
            f"serve_config http_options.port {port} differs from spec http.port "
            f"{plan.spec.http.port}, which the pods' `serve` port and probes use"
        )
    if _is_loopback(str(http.get("host", "127.0.0.1"))):
        raise ValueError(
            f"serve_config http_options.host {http.get('host', '127.0.0.1')!r} is a loopback "
            "address: the Serve Service could not reach the proxies; use 0.0.0.0"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metadata(plan: Plan) -> dict[str, Any]:
    spec = plan.spec
    return {
        "name": spec.name,
        "namespace": spec.kubernetes.namespace,
        "labels": {**app_labels(spec), SPEC_DIGEST_LABEL: spec.digest()},
    }


def _cluster_spec(plan: Plan, options: RenderOptions) -> dict[str, Any]:
    autoscale = needs_autoscaler(plan)
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": autoscale,
    }
    if autoscale:
        cluster["autoscalerOptions"] = _autoscaler_options(options.autoscaler_idle_timeout_s)
    cluster["headGroupSpec"] = _head_group(plan, options.dashboard)
    cluster["workerGroupSpecs"] = [_worker_group(plan, group) for group in plan.groups]
    return cluster


def needs_autoscaler(plan: Plan) -> bool:
    """Any group that can change size, or an incremental upgrade (KubeRay requires it)."""
    resizable = any(g.min_replicas != g.max_replicas for g in plan.groups)
    return resizable or plan.spec.kubernetes.upgrade_strategy == INCREMENTAL


def _autoscaler_options(idle_timeout_s: int) -> dict[str, Any]:
    # v2 is the autoscaler that scales worker groups for label_selector demands.
    sidecar = {"cpu": "500m", "memory": "512Mi"}
    return {
        "version": "v2",
        "upscalingMode": "Default",
        "idleTimeoutSeconds": idle_timeout_s,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": dict(sidecar), "limits": dict(sidecar)},
        "securityContext": container_security_context(),
    }


def _head_group(plan: Plan, dashboard: DashboardHosts) -> dict[str, Any]:
    spec = plan.spec
    return {
        "serviceType": "ClusterIP",
        "rayStartParams": {
            "dashboard-host": "0.0.0.0",
            "metrics-export-port": str(spec.http.metrics_port),
            "num-cpus": "0",  # no engine or replica lands on the head
        },
        "template": head_template(spec, head_shape(), dashboard),
    }


def _worker_group(plan: Plan, group: Group) -> dict[str, Any]:
    """One KubeRay worker group; one replica is one engine host set (a whole TPU slice)."""
    engines = [e for e in plan.engines if e.group.name == group.name]
    worker: dict[str, Any] = {
        "groupName": group.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "numOfHosts": group.hosts_per_replica,
        # Native KubeRay fields (>= 1.5): they become `ray start --labels/--resources`,
        # and KubeRay rejects the same keys inside rayStartParams.
        "labels": group.labels(),
        "rayStartParams": {"metrics-export-port": str(plan.spec.http.metrics_port)},
        "template": worker_template(plan.spec, group, host_shape(group, engines)),
    }
    resources = {name: f"{amount:g}" for name, amount in group.ray_resources_per_host().items()}
    if resources:
        worker["resources"] = resources
    return worker


def _upgrade_strategy(plan: Plan, incremental: IncrementalUpgrade) -> dict[str, Any]:
    strategy = plan.spec.kubernetes.upgrade_strategy
    if strategy != INCREMENTAL:
        return {"type": strategy}
    surge = incremental.max_surge_percent or _one_replica_percent(plan)
    return {
        "type": strategy,
        "clusterUpgradeOptions": {
            "gatewayClassName": incremental.gateway_class_name,
            "maxSurgePercent": surge,
            "stepSizePercent": surge,  # must not exceed maxSurgePercent
            "intervalSeconds": incremental.interval_seconds,
        },
    }


def _one_replica_percent(plan: Plan) -> int:
    replicas = sum(g.min_replicas for g in plan.groups)
    return min(100, max(1, math.ceil(100 / max(1, replicas))))
