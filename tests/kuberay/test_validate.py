"""check_resource: CRD schema, unknown fields, Kubernetes pod schema and KubeRay's own rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kuberay_helpers import EXAMPLES, example_plan, hand_serve_config

from rayfleet.kuberay import check_resource, render_raycluster, render_rayservice
from rayfleet.kuberay.crds import CRDS_ENV, CrdsNotFoundError, crd_schema, crds_dir, missing_crds
from rayfleet.kuberay.validate import unknown_fields

WORKER = "spec.rayClusterConfig.workerGroupSpecs[0]"
WORKER_POD = f"{WORKER}.template.spec"


def service(name: str = "tpu-v6e-4x4") -> dict[str, Any]:
    plan = example_plan(name)
    return render_rayservice(plan, hand_serve_config(plan))


def first_worker(resource: dict[str, Any]) -> dict[str, Any]:
    worker: dict[str, Any] = resource["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return worker


def problems_at(problems: list[str], path: str) -> list[str]:
    return [p for p in problems if p.startswith(f"{path}: ")]


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_render_without_problems(name: str) -> None:
    plan = example_plan(name)
    assert check_resource(render_rayservice(plan, hand_serve_config(plan))) == []
    assert check_resource(render_raycluster(plan)) == []


@pytest.mark.usefixtures("crds")
def test_lead_serve_config_renders_without_problems() -> None:
    try:
        from rayfleet.deployments.serve_config import render_serve_config

        plan = example_plan("gpu-h100-pd")
        config = render_serve_config(plan)
    except Exception as error:  # the lead's module is being written alongside this one
        pytest.skip(f"rayfleet.deployments.serve_config not usable yet: {error!r}")
    assert check_resource(render_rayservice(plan, config)) == []


@pytest.mark.usefixtures("crds")
def test_misspelled_field_is_reported_by_path() -> None:
    resource = service()
    worker = first_worker(resource)
    worker["groupNme"] = worker.pop("groupName")
    resource["spec"]["serveConfigV3"] = resource["spec"].pop("serveConfigV2")
    problems = check_resource(resource)
    assert problems_at(problems, f"{WORKER}.groupNme") == [
        f"{WORKER}.groupNme: unknown field 'groupNme' (did you mean 'groupName'?)"
    ]
    assert problems_at(problems, "spec.serveConfigV3")[0].endswith(
        "unknown field 'serveConfigV3' (did you mean 'serveConfigV2'?)"
    )
    assert problems_at(problems, WORKER) == [f"{WORKER}: 'groupName' is a required property"]


@pytest.mark.usefixtures("crds")
def test_pod_template_problems_are_reported_once_by_path() -> None:
    resource = service()
    pod = first_worker(resource)["template"]["spec"]
    pod["containers"][0]["imagePullPolicyy"] = "Always"
    pod["containers"][0]["ports"][0]["containerPort"] = "eight-thousand"
    pod["nodeSelectr"] = pod.pop("nodeSelector")
    problems = check_resource(resource)
    container = f"{WORKER_POD}.containers[0]"
    assert len(problems_at(problems, f"{container}.imagePullPolicyy")) == 1
    assert problems_at(problems, f"{container}.ports[0].containerPort") == [
        f"{container}.ports[0].containerPort: 'eight-thousand' is not of type 'integer'"
    ]
    assert "did you mean 'nodeSelector'" in problems_at(problems, f"{WORKER_POD}.nodeSelectr")[0]
    assert len(problems) == 3


@pytest.mark.usefixtures("crds")
def test_pod_fields_the_target_kubernetes_does_not_know_are_reported() -> None:
    """The CRD embeds a newer PodSpec; Kubernetes 1.32 has no hostnameOverride (1.34+)."""
    resource = service()
    first_worker(resource)["template"]["spec"]["hostnameOverride"] = "engine-0"
    assert check_resource(resource, kubernetes_version="1.32") == [
        f"{WORKER_POD}.hostnameOverride: unknown field 'hostnameOverride'"
        " (did you mean 'hostname'?)"
    ]
    assert check_resource(resource, kubernetes_version="1.35") == []


@pytest.mark.usefixtures("crds")
def test_kuberay_rules() -> None:
    resource = service()
    cluster = resource["spec"]["rayClusterConfig"]
    worker = first_worker(resource)
    worker["rayStartParams"]["labels"] = "a=b"
    worker["rayStartParams"]["num-cpus"] = "4"
    worker["labels"]["rayfleet.io/group"] = "not a label value!"
    worker["minReplicas"] = 3
    cluster["workerGroupSpecs"].append(copy.deepcopy(worker))
    cluster["enableInTreeAutoscaling"] = False
    options = resource["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]
    options["maxSurgePercent"], options["stepSizePercent"] = 20, 30
    problems = check_resource(resource)
    assert problems_at(problems, f"{WORKER}.rayStartParams.labels")
    assert problems_at(problems, f"{WORKER}.resources")
    assert problems_at(problems, f"{WORKER}.labels.rayfleet.io/group")
    assert problems_at(problems, f"{WORKER}.minReplicas")
    assert problems_at(problems, "spec.rayClusterConfig.workerGroupSpecs[1].groupName")
    assert problems_at(problems, "spec.rayClusterConfig.enableInTreeAutoscaling")
    assert problems_at(problems, "spec.upgradeStrategy.clusterUpgradeOptions.stepSizePercent")


@pytest.mark.usefixtures("crds")
def test_autoscaler_v2_needs_restart_policy_never_and_serve_config_needs_applications() -> None:
    resource = service("gpu-l4")
    first_worker(resource)["template"]["spec"]["restartPolicy"] = "OnFailure"
    resource["spec"]["serveConfigV2"] = "just a string"
    problems = check_resource(resource)
    assert problems_at(problems, f"{WORKER_POD}.restartPolicy")
    assert problems_at(problems, "spec.serveConfigV2")


@pytest.mark.usefixtures("crds")
def test_wrong_kind_is_one_problem() -> None:
    problems = check_resource({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    assert len(problems) == 1 and problems[0].startswith("apiVersion/kind:")


@pytest.mark.usefixtures("crds")
def test_crd_schemas_load_for_both_kinds() -> None:
    for kind in ("RayService", "RayCluster"):
        schema = crd_schema(kind)
        assert "spec" in schema["properties"]


def test_unknown_field_walk_respects_preserve_unknown_fields_and_maps() -> None:
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "map": {"type": "object", "additionalProperties": {"properties": {"a": {}}}},
            "list": {"type": "array", "items": {"properties": {"b": {}}}},
            "opaque": {"type": "object"},
        },
    }
    value = {
        "free": {"anything": {"goes": 1}},
        "map": {"k1": {"a": 1}, "k2": {"z": 1}},
        "list": [{"b": 1}, {"c": 1}],
        "opaque": {"whatever": 1},
        "extra": 1,
    }
    found = {
        ".".join(map(str, path)): message for path, message in unknown_fields(value, schema, [])
    }
    assert set(found) == {"map.k2.z", "list.1.c", "extra"}


def test_crds_dir_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRDS_ENV, str(tmp_path))
    assert crds_dir() == tmp_path
    problem = missing_crds()
    assert problem is not None and str(tmp_path) in problem and CRDS_ENV in problem
    with pytest.raises(CrdsNotFoundError, match=CRDS_ENV):
        check_resource(service())


def test_default_crds_dir_is_shared_folder_beside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRDS_ENV, raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert crds_dir() == repo.parent / "shared" / "kuberay" / "crds"
