"""Where the KubeRay CRDs live and how to read their v1 schemas.

The CRDs are data kept outside the repository (``../shared/kuberay/crds`` next
to the checkout, or wherever ``RAYFLEET_CRDS_DIR`` points); they are read in
place, never copied in.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

CRDS_ENV = "RAYFLEET_CRDS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CRDS_DIR = REPO_ROOT.parent / "shared" / "kuberay" / "crds"
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayCluster": "ray.io_rayclusters.yaml"}


class CrdsNotFoundError(FileNotFoundError):
    """The KubeRay CRD files are not where RayFleet looks for them."""


def crds_dir() -> Path:
    """``$RAYFLEET_CRDS_DIR`` if set, else ``../shared/kuberay/crds`` beside the repo."""
    configured = os.environ.get(CRDS_ENV)
    return Path(configured) if configured else DEFAULT_CRDS_DIR


def missing_crds(directory: Path | None = None) -> str | None:
    """Why the CRDs cannot be used, or None when every file is present."""
    directory = directory or crds_dir()
    absent = [name for name in CRD_FILES.values() if not (directory / name).is_file()]
    if not absent:
        return None
    return (
        f"KubeRay CRDs not found: {', '.join(absent)} missing in {directory} "
        f"(set {CRDS_ENV} to the directory holding the KubeRay v1.7 CRD YAML files)"
    )


def crd_schema(kind: str, version: str = "v1", directory: Path | None = None) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind`` at ``version`` from its CRD file."""
    if kind not in CRD_FILES:
        raise KeyError(f"no CRD known for kind {kind!r}; known: {', '.join(CRD_FILES)}")
    directory = directory or crds_dir()
    problem = missing_crds(directory)
    if problem:
        raise CrdsNotFoundError(problem)
    return _load_schema(str(directory / CRD_FILES[kind]), version)


@lru_cache(maxsize=8)
def _load_schema(path: str, version: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~1 MB each
    with open(path) as handle:
        crd = yaml.load(handle, Loader=loader)
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    served = ", ".join(v["name"] for v in crd["spec"]["versions"])
    raise KeyError(f"{path} has no version {version!r}; it serves {served}")
