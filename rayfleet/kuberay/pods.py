"""Pod templates for the Ray head and worker groups.

Probes are left to KubeRay on purpose. KubeRay 1.7 injects version-aware
liveness/readiness probes into every Ray container that has none: for Ray >=
2.53 an HTTP GET on the dashboard agent's unified health endpoint, otherwise
``wget`` exec probes on 52365/api/local_raylet_healthz (plus 8265/api/gcs_healthz
on the head). For RayService workers it replaces the readiness probe with an exec
probe that also checks the Serve proxy (``/-/healthz`` on the port named
``serve``), which is what takes a worker out of the Serve Service while its proxy
is down. A probe written here would switch that injection off, so we only make
sure the port names KubeRay looks up (``serve``, ``metrics``...) are right and that
``spec.rayVersion`` is set, since the probe flavour depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayfleet.deployments.serve_config import SERVE_ENV
from rayfleet.kuberay.sizing import GPU_RESOURCE, TPU_RESOURCE, HostShape
from rayfleet.platform.accelerators import gpu_type, tpu_slice
from rayfleet.platform.plan import Group
from rayfleet.platform.spec import GpuAccelerator, Spec, TpuAccelerator

GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
RAY_UID = 1000  # the `ray` user of the rayproject images the RayFleet image builds on
HF_TOKEN_ENV = "HF_TOKEN"
SECRET_KEY = "token"

GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
GKE_TPU_ACCELERATOR = "cloud.google.com/gke-tpu-accelerator"
GKE_TPU_TOPOLOGY = "cloud.google.com/gke-tpu-topology"


@dataclass(frozen=True)
class DashboardHosts:
    """Where the Ray dashboard finds Grafana and Prometheus (head env vars).

    Defaults match a kube-prometheus-stack release named ``prometheus`` in the
    ``prometheus-system`` namespace, as in KubeRay's observability guide; the
    iframe host is what the browser loads, i.e. a port-forward by default.
    """

    grafana_host: str = "http://prometheus-grafana.prometheus-system.svc:80"
    prometheus_host: str = "http://prometheus-kube-prometheus-prometheus.prometheus-system.svc:9090"
    grafana_iframe_host: str = "http://127.0.0.1:3000"

    def env(self) -> list[dict[str, Any]]:
        return [
            {"name": "RAY_GRAFANA_HOST", "value": self.grafana_host},
            {"name": "RAY_PROMETHEUS_HOST", "value": self.prometheus_host},
            {"name": "RAY_GRAFANA_IFRAME_HOST", "value": self.grafana_iframe_host},
        ]


def api_key_secret_name(spec: Spec) -> str:
    return f"{spec.name}-api-key"


def app_labels(spec: Spec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "rayfleet",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "rayfleet",
    }


def _port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def head_ports(spec: Spec) -> list[dict[str, Any]]:
    return [
        _port("gcs-server", GCS_PORT),
        _port("dashboard", DASHBOARD_PORT),
        _port("client", CLIENT_PORT),
        _port("serve", spec.http.port),
        _port("metrics", spec.http.metrics_port),
    ]


def worker_ports(spec: Spec) -> list[dict[str, Any]]:
    """Workers run a Serve proxy (proxy_location EveryNode) and export metrics."""
    return [_port("serve", spec.http.port), _port("metrics", spec.http.metrics_port)]


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": SECRET_KEY}}}


def secret_env(spec: Spec) -> list[dict[str, Any]]:
    """Secrets reach the pods only as references; their values never enter the spec."""
    env = []
    if spec.kubernetes.hf_token_secret:
        env.append(_secret_env(HF_TOKEN_ENV, spec.kubernetes.hf_token_secret))
    if spec.auth.api_key_env:
        env.append(_secret_env(spec.auth.api_key_env, api_key_secret_name(spec)))
    return env


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def ray_container(
    name: str, spec: Spec, shape: HostShape, ports: list[dict[str, Any]], env: list[dict[str, Any]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": spec.kubernetes.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": ports,
        "resources": shape.requirements(),
        "securityContext": container_security_context(),
    }
    if env:
        container["env"] = env
    return container


def node_placement(group: Group) -> dict[str, Any]:
    """nodeSelector and tolerations that land a group's pods on its accelerator."""
    acc = group.accelerator
    if isinstance(acc, GpuAccelerator):
        return {
            "nodeSelector": {GKE_ACCELERATOR: gpu_type(acc.type).gke_label},
            "tolerations": [_toleration(GPU_RESOURCE)],
        }
    if isinstance(acc, TpuAccelerator):
        tpu = tpu_slice(acc.version, acc.topology)
        return {
            "nodeSelector": {
                GKE_TPU_ACCELERATOR: tpu.gke_accelerator,
                GKE_TPU_TOPOLOGY: acc.topology,
            },
            "tolerations": [_toleration(TPU_RESOURCE)],
        }
    return {}


def _toleration(resource: str) -> dict[str, Any]:
    return {"key": resource, "operator": "Exists", "effect": "NoSchedule"}


def pod_template(
    spec: Spec, container: dict[str, Any], placement: dict[str, Any]
) -> dict[str, Any]:
    return {
        "metadata": {"labels": app_labels(spec)},
        "spec": {
            "securityContext": pod_security_context(),
            "containers": [container],
            **placement,
        },
    }


def serve_env() -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in SERVE_ENV.items()]


def head_template(spec: Spec, shape: HostShape, dashboard: DashboardHosts) -> dict[str, Any]:
    env = serve_env() + dashboard.env() + secret_env(spec)
    container = ray_container("ray-head", spec, shape, head_ports(spec), env)
    return pod_template(spec, container, {})


def worker_template(spec: Spec, group: Group, shape: HostShape) -> dict[str, Any]:
    env = serve_env() + secret_env(spec)
    container = ray_container("ray-worker", spec, shape, worker_ports(spec), env)
    return pod_template(spec, container, node_placement(group))
