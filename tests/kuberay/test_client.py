"""The client, driven through the real kubernetes ApiClient against a fake API server."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kuberay_helpers import FakeKubeApi, example_plan, hand_serve_config
from kubernetes import client as k8s

from rayfleet.kuberay import (
    RayServiceNotFoundError,
    RayServiceNotReadyError,
    apply,
    delete,
    render_rayservice,
    status,
    wait,
)

Fake = tuple[FakeKubeApi, k8s.ApiClient]
NS = "llm"


def rendered() -> dict[str, Any]:
    plan = example_plan("gpu-l4")
    return render_rayservice(plan, hand_serve_config(plan))


NAME = rendered()["metadata"]["name"]


def ready_status(generation: int, reason: str = "NonZeroServeEndpoints") -> dict[str, Any]:
    """A RayService status as KubeRay v1.7 writes it once Serve answers."""
    return {
        "observedGeneration": generation,
        "numServeEndpoints": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": reason,
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": generation,
            },
            {
                "type": "UpgradeInProgress",
                "status": "False",
                "reason": "NoPendingCluster",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ],
        "activeServiceStatus": {
            "rayClusterName": f"{NAME}-abcde",
            "applicationStatuses": {
                NAME: {
                    "status": "RUNNING",
                    "serveDeploymentStatuses": {"llama-3.1-8b-unified": {"status": "HEALTHY"}},
                }
            },
        },
    }


def failing_status(generation: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ZeroServeEndpoints",
                "message": "no Serve endpoint is ready",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ],
        "pendingServiceStatus": {
            "rayClusterName": f"{NAME}-fghij",
            "applicationStatuses": {
                NAME: {
                    "status": "DEPLOY_FAILED",
                    "message": "replica failed to start",
                    "serveDeploymentStatuses": {
                        "llama-3.1-8b-unified": {"status": "UNHEALTHY", "message": "CUDA OOM"}
                    },
                }
            },
        },
    }


def test_apply_is_server_side_apply(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    resource = rendered()
    stored = apply(resource, api_client=api_client)
    (request,) = fake.requests
    assert request.method == "PATCH"
    assert request.path == f"/apis/ray.io/v1/namespaces/{NS}/rayservices/{NAME}"
    assert request.content_type == "application/apply-patch+yaml"
    assert request.query["fieldManager"] == ["rayfleet"]
    assert request.query["force"] == ["true"]
    assert yaml.safe_load(request.body) == resource
    assert stored["metadata"]["generation"] == 1
    assert stored["spec"] == resource["spec"]


def test_apply_into_another_namespace_moves_the_object(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    apply(rendered(), namespace="staging", api_client=api_client)
    assert fake.requests[0].path.startswith("/apis/ray.io/v1/namespaces/staging/")
    assert status(NAME, "staging", api_client=api_client).namespace == "staging"


def test_apply_refuses_other_kinds(fake_kube: Fake) -> None:
    _, api_client = fake_kube
    with pytest.raises(ValueError, match="RayService"):
        apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, api_client=api_client)


def test_status_goes_from_pending_to_ready(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    apply(rendered(), api_client=api_client)

    fresh = status(NAME, NS, api_client=api_client)
    assert not fresh.ready and fresh.ready_reason is None
    assert fresh.describe() == "no Ready condition yet"

    fake.set_status(NS, NAME, failing_status(1))
    failing = status(NAME, NS, api_client=api_client)
    assert not failing.ready and failing.ready_reason == "ZeroServeEndpoints"
    assert failing.pending_cluster == f"{NAME}-fghij" and failing.active_cluster is None
    (app,) = failing.pending.applications
    assert (app.status, app.deployments[0].message) == ("DEPLOY_FAILED", "CUDA OOM")

    fake.set_status(NS, NAME, ready_status(1))
    ready = status(NAME, NS, api_client=api_client)
    assert ready.ready and ready.ready_reason == "NonZeroServeEndpoints"
    assert ready.active_cluster == f"{NAME}-abcde" and ready.pending_cluster is None
    assert not ready.upgrade_in_progress
    assert ready.num_serve_endpoints == 2
    assert [(a.name, a.status) for a in ready.active.applications] == [(NAME, "RUNNING")]


def test_upgrade_in_progress_names_the_pending_cluster(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    apply(rendered(), api_client=api_client)
    upgrading = ready_status(1)
    upgrading["conditions"][1].update(status="True", reason="BothActivePendingClustersExist")
    upgrading["pendingServiceStatus"] = {"rayClusterName": f"{NAME}-zzzzz", "targetCapacity": 20}
    fake.set_status(NS, NAME, upgrading)
    found = status(NAME, NS, api_client=api_client)
    assert found.ready and found.upgrade_in_progress
    assert (found.pending_cluster, found.pending.target_capacity) == (f"{NAME}-zzzzz", 20)
    assert f"upgrade in progress to cluster {NAME}-zzzzz" in found.describe()


def test_wait_returns_once_ready(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    apply(rendered(), api_client=api_client)
    polls: list[float] = []

    def operator_catches_up(seconds: float) -> None:  # runs between polls
        polls.append(seconds)
        fake.set_status(NS, NAME, failing_status(1) if len(polls) == 1 else ready_status(1))

    found = wait(NAME, 30, NS, api_client=api_client, poll_s=0.5, sleep=operator_catches_up)
    assert found.ready and found.ready_reason == "NonZeroServeEndpoints"
    assert polls == [0.5, 0.5]


def test_wait_timeout_names_the_failure_reason(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    apply(rendered(), api_client=api_client)
    fake.set_status(NS, NAME, failing_status(1))
    with pytest.raises(RayServiceNotReadyError) as caught:
        wait(NAME, 0.2, NS, api_client=api_client, poll_s=0.05)
    message = str(caught.value)
    assert f"RayService {NS}/{NAME} not Ready after 0.2s" in message
    assert "reason=ZeroServeEndpoints (no Serve endpoint is ready)" in message
    assert "DEPLOY_FAILED (replica failed to start)" in message
    assert "UNHEALTHY (CUDA OOM)" in message
    assert caught.value.status is not None and caught.value.status.ready_reason == (
        "ZeroServeEndpoints"
    )


def test_wait_ignores_ready_status_of_an_older_spec(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    resource = rendered()
    apply(resource, api_client=api_client)
    fake.set_status(NS, NAME, ready_status(1))
    resource["spec"]["serveConfigV2"] += "# changed\n"
    updated = apply(resource, api_client=api_client)  # 200 this time, not 201
    assert updated["metadata"]["generation"] == fake.generation(NS, NAME) == 2
    assert updated["status"]["observedGeneration"] == 1  # status survives the apply
    with pytest.raises(RayServiceNotReadyError, match="generation 1 < 2"):
        wait(NAME, 0.1, NS, api_client=api_client, poll_s=0.05)
    fake.set_status(NS, NAME, ready_status(2))
    assert wait(NAME, 1, NS, api_client=api_client, poll_s=0.05).current


def test_wait_for_a_missing_service_times_out_clearly(fake_kube: Fake) -> None:
    _, api_client = fake_kube
    with pytest.raises(RayServiceNotReadyError, match="does not exist"):
        wait("absent", 0.1, NS, api_client=api_client, poll_s=0.05)


def test_delete(fake_kube: Fake) -> None:
    fake, api_client = fake_kube
    apply(rendered(), api_client=api_client)
    assert delete(NAME, NS, api_client=api_client) is True
    assert fake.requests[-1].method == "DELETE"
    with pytest.raises(RayServiceNotFoundError):
        status(NAME, NS, api_client=api_client)
    assert delete(NAME, NS, api_client=api_client) is False
