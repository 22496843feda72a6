"""Plan → RayService/RayCluster: shapes, placement, scaling, upgrades, secrets."""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import pytest
import yaml
from kuberay_helpers import EXAMPLES, example_plan, hand_serve_config

from rayfleet.kuberay import DashboardHosts, RenderOptions, render_raycluster, render_rayservice
from rayfleet.kuberay.render import RAY_VERSION, IncrementalUpgrade
from rayfleet.platform.plan import GROUP_LABEL, resolve
from rayfleet.platform.spec import parse_spec


def rayservice(name: str, options: RenderOptions | None = None) -> dict[str, Any]:
    plan = example_plan(name)
    return render_rayservice(plan, hand_serve_config(plan), options)


def cluster_of(name: str) -> dict[str, Any]:
    return rayservice(name)["spec"]["rayClusterConfig"]


def workers_by_name(name: str) -> dict[str, dict[str, Any]]:
    return {w["groupName"]: w for w in cluster_of(name)["workerGroupSpecs"]}


def ray_containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_gpu_l4_worker_group() -> None:
    cluster = cluster_of("gpu-l4")
    worker = workers_by_name("gpu-l4")["gpu-nvidia-l4-x1"]
    pod = worker["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"] == resources["limits"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (1, 1, 4)
    assert worker["numOfHosts"] == 1
    assert worker["labels"] == {GROUP_LABEL: "gpu-nvidia-l4-x1", "ray.io/accelerator-type": "L4"}
    assert "resources" not in worker  # GPUs come from the container limit, not a custom resource
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["version"] == "v2"


def test_single_host_tpu_is_fixed_size_without_autoscaler() -> None:
    cluster = cluster_of("tpu-v6e-2x4")
    (worker,) = cluster["workerGroupSpecs"]
    assert worker["numOfHosts"] == 1
    assert (
        worker["template"]["spec"]["containers"][0]["resources"]["limits"]["google.com/tpu"] == "8"
    )
    assert worker["resources"] == {"TPU": "8"}
    assert cluster["enableInTreeAutoscaling"] is False
    assert "autoscalerOptions" not in cluster


def test_multi_host_tpu_slice() -> None:
    (worker,) = cluster_of("tpu-v6e-4x4")["workerGroupSpecs"]
    pod = worker["template"]["spec"]
    assert worker["groupName"] == "tpu-v6e-4x4"
    assert worker["numOfHosts"] == 4
    assert pod["containers"][0]["resources"]["requests"]["google.com/tpu"] == "4"
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "4x4"
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == "tpu-v6e-slice"
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 2)
    assert worker["labels"]["ray.io/accelerator-type"] == "TPU-V6E"


def test_prefill_and_decode_get_separate_h100_groups() -> None:
    plan = example_plan("gpu-h100-pd")
    assert plan.spec.models[0].disaggregation is not None
    assert plan.spec.models[0].disaggregation.connector == "nixl"
    workers = workers_by_name("gpu-h100-pd")
    assert set(workers) == {"gpu-nvidia-h100-80gb-x4-prefill", "gpu-nvidia-h100-80gb-x4-decode"}
    for name, worker in workers.items():
        pod = worker["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert worker["labels"][GROUP_LABEL] == name
    assert (workers["gpu-nvidia-h100-80gb-x4-decode"]["maxReplicas"]) == 4


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_engine_group_has_a_labelled_worker_group(name: str) -> None:
    """The serve config places engines by label_selector {rayfleet.io/group: <group>}."""
    labels = {w["labels"][GROUP_LABEL] for w in cluster_of(name)["workerGroupSpecs"]}
    assert {engine.group.name for engine in example_plan(name).engines} <= labels


@pytest.mark.parametrize("name", EXAMPLES)
def test_head_runs_no_engines_and_exports_metrics(name: str) -> None:
    head = cluster_of(name)["headGroupSpec"]
    plan = example_plan(name)
    assert head["rayStartParams"] == {
        "dashboard-host": "0.0.0.0",
        "metrics-export-port": str(plan.spec.http.metrics_port),
        "num-cpus": "0",
    }
    (container,) = head["template"]["spec"]["containers"]
    assert not {"nvidia.com/gpu", "google.com/tpu"} & set(container["resources"]["limits"])
    assert "nodeSelector" not in head["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000,
                     "metrics": plan.spec.http.metrics_port}  # fmt: skip


def test_dashboard_embeds_grafana_with_configurable_hosts() -> None:
    def head_env(options: RenderOptions | None) -> dict[str, str]:
        head = rayservice("gpu-l4", options)["spec"]["rayClusterConfig"]["headGroupSpec"]
        env = head["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e["value"] for e in env if "value" in e}

    defaults = head_env(None)
    assert defaults["RAY_GRAFANA_HOST"].startswith("http://")
    assert defaults["RAY_PROMETHEUS_HOST"].startswith("http://")
    assert "RAY_GRAFANA_IFRAME_HOST" in defaults
    custom = DashboardHosts("http://g:3000", "http://p:9090", "https://grafana.example.com")
    assert head_env(RenderOptions(dashboard=custom))["RAY_GRAFANA_IFRAME_HOST"] == (
        "https://grafana.example.com"
    )


@pytest.mark.parametrize("name", EXAMPLES)
def test_serve_config_is_embedded_verbatim(name: str) -> None:
    plan = example_plan(name)
    config = hand_serve_config(plan)
    text = render_rayservice(plan, config)["spec"]["serveConfigV2"]
    assert text == yaml.safe_dump(config, sort_keys=False)
    assert yaml.safe_load(text) == config


def test_rayservice_embeds_the_raycluster_spec() -> None:
    plan = example_plan("gpu-h100-pd")
    service = render_rayservice(plan, hand_serve_config(plan))
    cluster = render_raycluster(plan)
    assert cluster["kind"] == "RayCluster"
    assert service["spec"]["rayClusterConfig"] == cluster["spec"]
    assert service["metadata"]["name"] == plan.spec.name
    assert service["metadata"]["namespace"] == "llm"
    assert service["metadata"]["labels"]["rayfleet.io/spec-digest"] == plan.spec.digest()


def test_serve_config_that_cannot_serve_is_refused() -> None:
    plan = example_plan("gpu-l4")
    loopback = hand_serve_config(plan) | {"http_options": {"host": "127.0.0.1", "port": 8000}}
    with pytest.raises(ValueError, match="loopback"):
        render_rayservice(plan, loopback)
    other_port = hand_serve_config(plan) | {"http_options": {"host": "0.0.0.0", "port": 9000}}
    with pytest.raises(ValueError, match="9000"):
        render_rayservice(plan, other_port)
    with pytest.raises(ValueError, match="applications"):
        render_rayservice(plan, {"http_options": {"host": "0.0.0.0"}})


def test_default_upgrade_strategy_is_new_cluster() -> None:
    assert rayservice("gpu-l4")["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_incremental_upgrade_fills_required_options_and_enables_autoscaler() -> None:
    service = rayservice("tpu-v6e-4x4")
    strategy = service["spec"]["upgradeStrategy"]
    assert strategy["type"] == "NewClusterWithIncrementalUpgrade"
    options = strategy["clusterUpgradeOptions"]
    assert options["gatewayClassName"] == "istio"
    assert options["intervalSeconds"] > 0
    # One slice of a one-slice cluster: the whole capacity moves in one step.
    assert options["maxSurgePercent"] == options["stepSizePercent"] == 100
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True

    custom = IncrementalUpgrade(gateway_class_name="gke-l7-rilb", max_surge_percent=25)
    options = rayservice("tpu-v6e-4x4", RenderOptions(incremental_upgrade=custom))["spec"][
        "upgradeStrategy"
    ]["clusterUpgradeOptions"]
    assert (options["gatewayClassName"], options["maxSurgePercent"]) == ("gke-l7-rilb", 25)


def test_incremental_upgrade_on_fixed_size_groups_still_enables_autoscaler() -> None:
    raw = yaml.safe_load(EXAMPLES["tpu-v6e-2x4"].read_text())
    raw["kubernetes"]["upgrade_strategy"] = "NewClusterWithIncrementalUpgrade"
    plan = resolve(parse_spec(raw))
    cluster = render_raycluster(plan)["spec"]
    assert cluster["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("name", EXAMPLES)
def test_containers_are_locked_down(name: str) -> None:
    cluster = cluster_of(name)
    contexts = [c["securityContext"] for c in ray_containers(cluster)]
    if cluster["enableInTreeAutoscaling"]:
        contexts.append(cluster["autoscalerOptions"]["securityContext"])
    for context in contexts:
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 1000
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("name", EXAMPLES)
def test_probes_are_left_to_kuberay(name: str) -> None:
    """KubeRay injects Serve-aware probes only into containers that define none."""
    cluster = cluster_of(name)
    for container in ray_containers(cluster):
        assert "readinessProbe" not in container and "livenessProbe" not in container
        assert {"serve", "metrics"} <= {p["name"] for p in container["ports"]}
    assert cluster["rayVersion"] == RAY_VERSION


def test_ray_version_matches_the_installed_ray() -> None:
    assert importlib.metadata.version("ray") == RAY_VERSION


SECRET_VALUES = {"RAYFLEET_API_KEY": "sk-live-never-render-me", "HF_TOKEN": "hf_never_render_me"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_secret_value_is_rendered(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in SECRET_VALUES.items():
        monkeypatch.setenv(variable, value)
    service = rayservice(name)
    text = yaml.safe_dump(service)
    assert not any(value in text for value in SECRET_VALUES.values())
    spec = example_plan(name).spec
    expected = {"HF_TOKEN": spec.kubernetes.hf_token_secret}
    if spec.auth.api_key_env:
        expected[spec.auth.api_key_env] = f"{spec.name}-api-key"
    for container in ray_containers(service["spec"]["rayClusterConfig"]):
        env = {e["name"]: e for e in container["env"]}
        for variable in (v for v in env if re.search("TOKEN|KEY|SECRET|PASSWORD", v)):
            assert set(env[variable]) == {"name", "valueFrom"}, variable
        refs = {n: e["valueFrom"]["secretKeyRef"] for n, e in env.items() if "valueFrom" in e}
        assert {n: r["name"] for n, r in refs.items()} == expected
        assert all(r["key"] == "token" for r in refs.values())


def test_without_secrets_configured_no_secret_env_is_added() -> None:
    raw = yaml.safe_load(EXAMPLES["tpu-v6e-2x4"].read_text())
    raw["kubernetes"].pop("hf_token_secret")
    cluster = render_raycluster(resolve(parse_spec(raw)))["spec"]
    for container in ray_containers(cluster):
        assert not [e for e in container.get("env", []) if "valueFrom" in e]


def test_cpu_workers_are_sized_for_their_engines() -> None:
    raw = {
        "name": "cpu-fleet",
        "models": [
            {
                "id": "tiny",
                "pools": {
                    "unified": {
                        "accelerator": {"kind": "cpu", "cpus": 3, "kv_cache_gib": 3},
                        "autoscaling": {"min_replicas": 0, "max_replicas": 3},
                    }
                },
            }
        ],
    }
    (worker,) = render_raycluster(resolve(parse_spec(raw)))["spec"]["workerGroupSpecs"]
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "7Gi"}  # engine cores + 1; KV cache + 4 GiB
    assert (worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (0, 0, 3)
    assert "nodeSelector" not in worker["template"]["spec"]
    assert worker["labels"] == {GROUP_LABEL: "cpu"}
