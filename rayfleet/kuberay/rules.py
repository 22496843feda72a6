"""Semantic rules KubeRay's controller enforces that the CRD schema cannot express.

Mirrors ``ray-operator/controllers/ray/utils/validation.go`` (KubeRay 1.7): a
resource that breaks one of these is accepted by the API server but never
reconciled, which only shows up later as a status event.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

PathParts = Sequence[str | int]
Found = Iterator[tuple[PathParts, str]]

RAY_START_RESOURCE_KEYS = ("num-cpus", "num-gpus", "memory", "resources")
UPGRADE_TYPES = ("NewCluster", "NewClusterWithIncrementalUpgrade", "None")
MAX_NAME = {"RayCluster": 53, "RayService": 47}  # KubeRay appends suffixes to these names
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def kuberay_rule_problems(resource: dict[str, Any]) -> Found:
    kind = resource.get("kind", "")
    yield from _name_problems(resource, kind)
    spec = resource.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "RayService":
        cluster = spec.get("rayClusterConfig")
        if isinstance(cluster, dict):
            yield from _cluster_problems(cluster, ["spec", "rayClusterConfig"])
        yield from _serve_config_problems(spec)
        yield from _upgrade_problems(spec, cluster if isinstance(cluster, dict) else {})
    else:
        yield from _cluster_problems(spec, ["spec"])


def _name_problems(resource: dict[str, Any], kind: str) -> Found:
    name = (resource.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        yield ["metadata", "name"], "required"
    elif len(name) > MAX_NAME.get(kind, 63) or not DNS1035.match(name):
        yield (
            ["metadata", "name"],
            f"must be a DNS-1035 label of at most {MAX_NAME.get(kind, 63)} characters",
        )


def _groups(cluster: dict[str, Any], path: list[str | int]) -> Iterator[tuple[PathParts, dict]]:
    head = cluster.get("headGroupSpec")
    if isinstance(head, dict):
        yield [*path, "headGroupSpec"], head
    workers = cluster.get("workerGroupSpecs")
    for index, worker in enumerate(workers if isinstance(workers, list) else []):
        if isinstance(worker, dict):
            yield [*path, "workerGroupSpecs", index], worker


def _cluster_problems(cluster: dict[str, Any], path: list[str | int]) -> Found:
    names: set[str] = set()
    autoscaler_v2 = _autoscaler_v2(cluster)
    for group_path, group in _groups(cluster, path):
        yield from _group_problems(group, group_path)
        if autoscaler_v2:
            yield from _restart_policy_problems(group, group_path)
        name = group.get("groupName")
        if isinstance(name, str):
            if name in names:
                yield [*group_path, "groupName"], f"duplicate worker group name {name!r}"
            names.add(name)


def _autoscaler_v2(cluster: dict[str, Any]) -> bool:
    options = cluster.get("autoscalerOptions") or {}
    return bool(cluster.get("enableInTreeAutoscaling")) and options.get("version") == "v2"


def _group_problems(group: dict[str, Any], path: PathParts) -> Found:
    params = group.get("rayStartParams") or {}
    if "labels" in params:
        yield [*path, "rayStartParams", "labels"], "not supported; use the group's `labels` field"
    clashing = [key for key in RAY_START_RESOURCE_KEYS if key in params]
    if clashing and group.get("resources"):
        yield (
            [*path, "resources"],
            f"set in both `resources` and rayStartParams ({', '.join(clashing)}); use only one",
        )
    for key, value in (group.get("labels") or {}).items():
        problem = _label_problem(str(key), str(value))
        if problem:
            yield [*path, "labels", key], problem
    low, high = group.get("minReplicas"), group.get("maxReplicas")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        yield [*path, "minReplicas"], f"{low} is above maxReplicas {high}"


def _label_problem(key: str, value: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return f"label key prefix {prefix!r} is not a DNS subdomain"
    if len(name) > 63 or not LABEL_NAME.match(name):
        return f"label key name {name!r} is not a valid Kubernetes label name"
    if value and (len(value) > 63 or not LABEL_NAME.match(value)):
        return f"label value {value!r} is not a valid Kubernetes label value"
    return None


def _restart_policy_problems(group: dict[str, Any], path: PathParts) -> Found:
    policy = ((group.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if policy not in (None, "", "Never"):
        yield [*path, "template", "spec", "restartPolicy"], "must be Never or unset (autoscaler v2)"


def _serve_config_problems(spec: dict[str, Any]) -> Found:
    text = spec.get("serveConfigV2")
    if text is None:
        return
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError as error:
        yield ["spec", "serveConfigV2"], f"not valid YAML: {error}"
        return
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        yield ["spec", "serveConfigV2"], "must be a Serve config with an `applications` list"


def _upgrade_problems(spec: dict[str, Any], cluster: dict[str, Any]) -> Found:
    strategy = spec.get("upgradeStrategy") or {}
    kind = strategy.get("type")
    path = ["spec", "upgradeStrategy"]
    if kind is not None and kind not in UPGRADE_TYPES:
        yield [*path, "type"], f"{kind!r} is not one of {', '.join(UPGRADE_TYPES)}"
    if kind != "NewClusterWithIncrementalUpgrade":
        return
    if not cluster.get("enableInTreeAutoscaling"):
        yield (
            ["spec", "rayClusterConfig", "enableInTreeAutoscaling"],
            "must be true: NewClusterWithIncrementalUpgrade needs the Ray autoscaler",
        )
    options = strategy.get("clusterUpgradeOptions")
    if not isinstance(options, dict):
        yield [*path, "clusterUpgradeOptions"], "required for NewClusterWithIncrementalUpgrade"
        return
    yield from _upgrade_option_problems(options, [*path, "clusterUpgradeOptions"])


def _upgrade_option_problems(options: dict[str, Any], path: PathParts) -> Found:
    """Value ranges; the CRD schema already reports the required fields that are absent."""
    surge = options.get("maxSurgePercent", 100)
    step = options.get("stepSizePercent")
    if not isinstance(surge, int) or not 0 <= surge <= 100:
        yield [*path, "maxSurgePercent"], "must be between 0 and 100"
    if isinstance(step, int) and not 0 <= step <= 100:
        yield [*path, "stepSizePercent"], "must be between 0 and 100"
    elif isinstance(step, int) and isinstance(surge, int) and step > surge:
        yield [*path, "stepSizePercent"], f"{step} exceeds maxSurgePercent {surge}"
    interval = options.get("intervalSeconds")
    if isinstance(interval, int) and interval <= 0:
        yield [*path, "intervalSeconds"], "must be greater than 0"
    if options.get("gatewayClassName", "?") == "":
        yield [*path, "gatewayClassName"], "must name the Gateway API GatewayClass to use"
