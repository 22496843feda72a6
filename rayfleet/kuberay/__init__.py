"""KubeRay: render RayService/RayCluster resources, check them, and drive them on a cluster."""

from rayfleet.kuberay.client import (
    RayServiceNotFoundError,
    RayServiceNotReadyError,
    RayServiceStatus,
    apply,
    connect,
    delete,
    status,
    wait,
)
from rayfleet.kuberay.crds import CrdsNotFoundError, crds_dir, missing_crds
from rayfleet.kuberay.pods import DashboardHosts
from rayfleet.kuberay.render import (
    IncrementalUpgrade,
    RenderOptions,
    render_raycluster,
    render_rayservice,
)
from rayfleet.kuberay.validate import check_resource

__all__ = [
    "CrdsNotFoundError",
    "DashboardHosts",
    "IncrementalUpgrade",
    "RayServiceNotFoundError",
    "RayServiceNotReadyError",
    "RayServiceStatus",
    "RenderOptions",
    "apply",
    "check_resource",
    "connect",
    "crds_dir",
    "delete",
    "missing_crds",
    "render_raycluster",
    "render_rayservice",
    "status",
    "wait",
]
