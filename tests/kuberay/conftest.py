"""Fixtures for the KubeRay tests: the CRDs (or a skip) and a fake Kubernetes API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kuberay_helpers import FakeKubeApi, serve_fake_kube
from kubernetes import client as k8s

from rayfleet.kuberay.crds import missing_crds


@pytest.fixture
def crds() -> None:
    """Skip, saying where RayFleet looked, when the KubeRay CRD files are absent."""
    problem = missing_crds()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def fake_kube() -> Iterator[tuple[FakeKubeApi, k8s.ApiClient]]:
    with serve_fake_kube() as served:
        yield served
