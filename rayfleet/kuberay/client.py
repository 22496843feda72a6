"""Apply, inspect, wait for and delete RayServices through the Kubernetes API.

Uses the official ``kubernetes`` client. Every function takes an optional
``api_client`` so callers (and tests) choose the cluster; without one, the
kubeconfig ``context`` (or the in-cluster service account) is used.

Status follows KubeRay v1.7's RayService ``status``: ``conditions`` (``Ready``,
``UpgradeInProgress``), ``activeServiceStatus`` / ``pendingServiceStatus`` with
the RayCluster name and Serve application/deployment statuses, and
``numServeEndpoints``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

GROUP = "ray.io"
VERSION = "v1"
FIELD_MANAGER = "rayfleet"
APPLY_PATCH = "application/apply-patch+yaml"
PLURALS = {"RayService": "rayservices", "RayCluster": "rayclusters"}


class RayServiceNotFoundError(LookupError):
    """The RayService does not exist."""


class RayServiceNotReadyError(TimeoutError):
    """The RayService did not become Ready in time; ``status`` is the last one seen."""

    def __init__(self, message: str, status: RayServiceStatus | None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_generation: int | None


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    status: str
    message: str


@dataclass(frozen=True)
class ApplicationStatus:
    name: str
    status: str
    message: str
    deployments: tuple[DeploymentStatus, ...]


@dataclass(frozen=True)
class ClusterServiceStatus:
    """One side of an upgrade: ``activeServiceStatus`` or ``pendingServiceStatus``."""

    cluster_name: str | None
    applications: tuple[ApplicationStatus, ...]
    target_capacity: int | None
    traffic_routed_percent: int | None


@dataclass(frozen=True)
class RayServiceStatus:
    name: str
    namespace: str
    generation: int | None
    observed_generation: int | None
    conditions: tuple[Condition, ...]
    active: ClusterServiceStatus
    pending: ClusterServiceStatus
    num_serve_endpoints: int

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    @property
    def ready(self) -> bool:
        ready = self.condition("Ready")
        return ready is not None and ready.status == "True"

    @property
    def ready_reason(self) -> str | None:
        ready = self.condition("Ready")
        return ready.reason if ready else None

    @property
    def upgrade_in_progress(self) -> bool:
        upgrade = self.condition("UpgradeInProgress")
        return upgrade is not None and upgrade.status == "True"

    @property
    def active_cluster(self) -> str | None:
        return self.active.cluster_name

    @property
    def pending_cluster(self) -> str | None:
        return self.pending.cluster_name

    @property
    def current(self) -> bool:
        """Whether the operator has seen the latest spec (status is not stale)."""
        if self.generation is None or self.observed_generation is None:
            return True
        return self.observed_generation >= self.generation

    def describe(self) -> str:
        """One line naming why the service is (not) ready, for logs and errors."""
        ready = self.condition("Ready")
        if ready is None:
            parts = ["no Ready condition yet"]
        else:
            parts = [_noted(f"Ready={ready.status} reason={ready.reason}", ready.message)]
        if not self.current:
            parts.append(f"status is for generation {self.observed_generation} < {self.generation}")
        if self.upgrade_in_progress:
            parts.append(f"upgrade in progress to cluster {self.pending_cluster}")
        for app in self.active.applications + self.pending.applications:
            if app.status != "RUNNING":
                parts.append(_describe_application(app))
        return "; ".join(parts)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RayServiceStatus:
        metadata = obj.get("metadata") or {}
        status = obj.get("status") or {}
        return cls(
            name=metadata.get("name", ""),
            namespace=metadata.get("namespace", ""),
            generation=metadata.get("generation"),
            observed_generation=status.get("observedGeneration"),
            conditions=tuple(_condition(c) for c in status.get("conditions") or []),
            active=_cluster_status(status.get("activeServiceStatus") or {}),
            pending=_cluster_status(status.get("pendingServiceStatus") or {}),
            num_serve_endpoints=int(status.get("numServeEndpoints") or 0),
        )


def _noted(text: str, message: str) -> str:
    return f"{text} ({message})" if message else text


def _describe_application(app: ApplicationStatus) -> str:
    text = _noted(f"application {app.name}: {app.status}", app.message)
    for deployment in app.deployments:
        if deployment.status != "HEALTHY":
            text += ", " + _noted(
                f"deployment {deployment.name}: {deployment.status}", deployment.message
            )
    return text


def _condition(raw: dict[str, Any]) -> Condition:
    return Condition(
        type=raw.get("type", ""),
        status=raw.get("status", "Unknown"),
        reason=raw.get("reason", ""),
        message=raw.get("message", ""),
        observed_generation=raw.get("observedGeneration"),
    )


def _cluster_status(raw: dict[str, Any]) -> ClusterServiceStatus:
    applications = tuple(
        ApplicationStatus(
            name=name,
            status=app.get("status", ""),
            message=app.get("message", ""),
            deployments=tuple(
                DeploymentStatus(d_name, d.get("status", ""), d.get("message", ""))
                for d_name, d in (app.get("serveDeploymentStatuses") or {}).items()
            ),
        )
        for name, app in (raw.get("applicationStatuses") or {}).items()
    )
    return ClusterServiceStatus(
        cluster_name=raw.get("rayClusterName") or None,
        applications=applications,
        target_capacity=raw.get("targetCapacity"),
        traffic_routed_percent=raw.get("trafficRoutedPercent"),
    )


def connect(context: str | None = None) -> k8s.ApiClient:
    """An ApiClient for a kubeconfig context, or the in-cluster service account."""
    if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    return k8s_config.new_client_from_config(context=context)


def _objects(api_client: k8s.ApiClient | None, context: str | None) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(api_client or connect(context))


def _as_object(response: object) -> dict[str, Any]:
    if not isinstance(response, dict):
        raise TypeError(
            f"expected a JSON object from the API server, got {type(response).__name__}"
        )
    return response


def apply(
    resource: dict[str, Any],
    namespace: str | None = None,
    context: str | None = None,
    *,
    api_client: k8s.ApiClient | None = None,
) -> dict[str, Any]:
    """Server-side apply (field manager ``rayfleet``, forced); returns the stored object."""
    kind = resource.get("kind", "")
    if resource.get("apiVersion") != f"{GROUP}/{VERSION}" or kind not in PLURALS:
        raise ValueError(f"can only apply {GROUP}/{VERSION} {' or '.join(PLURALS)}, got {kind!r}")
    body = copy.deepcopy(resource)
    metadata = body.setdefault("metadata", {})
    namespace = namespace or metadata.get("namespace") or "default"
    metadata["namespace"] = namespace
    # Raw response: the generated client maps only 200 for this PATCH, so the 201 the
    # API server sends when apply creates the object would otherwise come back as None.
    response: Any = _objects(api_client, context).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURALS[kind],
        metadata["name"],
        body,  # sent as JSON, which is valid YAML for the apply-patch+yaml content type
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type=APPLY_PATCH,
        _preload_content=False,
    )
    return _as_object(json.loads(response.data))


def status(
    name: str,
    namespace: str = "default",
    context: str | None = None,
    *,
    api_client: k8s.ApiClient | None = None,
) -> RayServiceStatus:
    """The RayService's current status; raises RayServiceNotFoundError if absent."""
    try:
        obj = _objects(api_client, context).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS["RayService"], name
        )
    except ApiException as error:
        if error.status == 404:
            raise RayServiceNotFoundError(f"RayService {namespace}/{name} not found") from None
        raise
    return RayServiceStatus.from_object(_as_object(obj))


def wait(
    name: str,
    timeout_s: float = 1800.0,
    namespace: str = "default",
    context: str | None = None,
    *,
    api_client: k8s.ApiClient | None = None,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> RayServiceStatus:
    """Poll until Ready=True for the latest spec; RayServiceNotReadyError names the reason."""
    api_client = api_client or connect(context)
    deadline = time.monotonic() + timeout_s
    last: RayServiceStatus | None = None
    while True:
        try:
            last = status(name, namespace, api_client=api_client)
        except RayServiceNotFoundError:
            last = None
        if last is not None and last.ready and last.current:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            why = last.describe() if last else "the RayService does not exist"
            raise RayServiceNotReadyError(
                f"RayService {namespace}/{name} not Ready after {timeout_s:g}s: {why}", last
            )
        sleep(min(poll_s, remaining))


def delete(
    name: str,
    namespace: str = "default",
    context: str | None = None,
    *,
    api_client: k8s.ApiClient | None = None,
    kind: str = "RayService",
) -> bool:
    """Delete the resource; False if it was already gone."""
    try:
        _objects(api_client, context).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
