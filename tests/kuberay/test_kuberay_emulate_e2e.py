"""`rayfleet emulate` end to end: a rendered RayService on a local multi-node Ray cluster.

Placement is checked from Ray's own state (node labels and Serve replica actors),
serving through the OpenAI API, and an in-place serveConfigV2 update under load.
Run under the machine-wide lock: it starts a head, 2 raylets and 2 vLLM-CPU engines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.kuberay import render_rayservice
from rayfleet.kuberay.emulate import NODE_GROUP_LABEL, node_labels, ray_state
from rayfleet.platform import local
from rayfleet.platform.plan import Plan, resolve
from rayfleet.platform.spec import load_spec

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
API = "http://127.0.0.1:8000"
DASHBOARD = "http://127.0.0.1:8265"
KEY = "emulate-e2e-key"
ENV = {**os.environ, "RAYFLEET_API_KEY": KEY, "COLUMNS": "200"}
HEADERS = {"Authorization": f"Bearer {KEY}"}
SCALE, MAX_NODES = 0.5, 3
EMULATE_ARGS = ("--scale", str(SCALE), "--max-nodes", str(MAX_NODES))
# Two unified models on two GPU types: two worker groups, one engine each.
TWO_GROUPS = {
    "name": "emulate-two-groups",
    "models": [
        {
            "id": "model-l4",
            "source": "meta-llama/Llama-3.1-8B-Instruct",
            "max_model_len": 4096,
            "pools": {
                "unified": {
                    "accelerator": {"kind": "gpu", "type": "nvidia-l4", "count": 1},
                    "replicas": 1,
                }
            },
        },
        {
            "id": "model-h100",
            "source": "meta-llama/Llama-3.1-70B-Instruct",
            "max_model_len": 4096,
            "pools": {
                "unified": {
                    "accelerator": {"kind": "gpu", "type": "nvidia-h100-80gb", "count": 4},
                    "replicas": 1,
                }
            },
        },
    ],
    "http": {"host": "0.0.0.0", "port": 8000, "metrics_port": 8080},
    "auth": {"api_key_env": "RAYFLEET_API_KEY"},
}


@dataclass
class Emulated:
    plan: Plan
    manifest: Path
    output: str
    resource: dict[str, Any] = field(default_factory=dict)


def rayfleet(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "rayfleet"), *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def write_manifest(plan: Plan, path: Path) -> dict[str, Any]:
    resource = render_rayservice(plan, render_serve_config(plan))
    path.write_text(yaml.safe_dump(resource, sort_keys=False))
    return resource


def spec_plan(name: str, tmp: Path) -> Plan:
    if name == "two-groups":
        (tmp / "spec.yaml").write_text(yaml.safe_dump(TWO_GROUPS))
        return resolve(load_spec(tmp / "spec.yaml"))
    return resolve(load_spec(Path(__file__).parents[2] / "examples/gpu-h100-pd-llama-70b.yaml"))


@pytest.fixture(scope="module", params=["two-groups", "gpu-h100-pd"])
def emulated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Emulated]:
    tmp = tmp_path_factory.mktemp(request.param)
    plan = spec_plan(request.param, tmp)
    manifest = tmp / "rayservice.yaml"
    resource = write_manifest(plan, manifest)
    if local.cluster_running(DASHBOARD):
        pytest.fail("a Ray cluster is already running on this machine; stop it first")
    try:
        # --scale 0.5 scales the PD example's autoscaling bounds down (decode max 4 → 2).
        result = rayfleet("emulate", str(manifest), *EMULATE_ARGS, "--detach")
        print(result.stdout[-4000:], result.stderr[-3000:])
        assert result.returncode == 0, result.stderr[-3000:]
        yield Emulated(plan, manifest, result.stdout, resource)
    finally:
        rayfleet("down", timeout=180)


def replicas_by_deployment() -> dict[str, list[dict[str, str]]]:
    """Serve deployment → labels of the node each live replica runs on (Ray's state)."""
    nodes = node_labels(DASHBOARD)
    placed: dict[str, list[dict[str, str]]] = {}
    for actor in ray_state(DASHBOARD, "actors"):
        if (actor.name or "").startswith("SERVE_REPLICA::"):
            deployment = actor.name.split("::", 1)[1].split("#")[1]
            placed.setdefault(deployment, []).append(nodes[actor.node_id])
    return placed


def node_ids() -> set[str]:
    """Ray node ids that host a live Serve replica."""
    return {labels["ray.io/node-id"] for d in replicas_by_deployment().values() for labels in d}


def test_emulate_reports_ready_and_its_substitutions(emulated):
    assert "Ready=True reason=NonZeroServeEndpoints" in emulated.output
    assert "→ CPU vLLM engine" in emulated.output
    assert "→ rayfleet:tiny" in emulated.output


def test_each_pool_runs_on_its_own_worker_group(emulated):
    placed = replicas_by_deployment()
    for engine in emulated.plan.engines:
        nodes = placed.get(engine.deployment_name)
        assert nodes, f"no live replica of {engine.deployment_name}; saw {sorted(placed)}"
        for labels in nodes:
            assert labels.get(NODE_GROUP_LABEL) == engine.group.name  # from RAY_NODE_TYPE_NAME
            # The group's own labels: rayfleet.io/group and the accelerator type.
            assert engine.group.labels().items() <= labels.items()


def test_every_model_serves_completions(emulated):
    for model in emulated.plan.spec.models:
        response = httpx.post(
            f"{API}/v1/completions",
            json={"model": model.id, "prompt": "hello there", "max_tokens": 8},
            headers=HEADERS,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] is not None


class Load:
    """Closed-loop clients sending completions until stopped; every outcome recorded."""

    def __init__(self, models: list[str], clients: int = 2) -> None:
        self.outcomes: list[int | str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(models[i % len(models)],))
            for i in range(clients)
        ]

    def _run(self, model: str) -> None:
        with httpx.Client(timeout=120, headers=HEADERS) as client:
            while not self._stop.is_set():
                try:
                    body = {"model": model, "prompt": "count with me", "max_tokens": 8}
                    status: int | str = client.post(f"{API}/v1/completions", json=body).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                self.outcomes.append(status)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=150)


def changed_manifest(emulated: Emulated, max_ongoing: int) -> Path:
    """The same RayService with one engine's max_ongoing_requests changed in serveConfigV2."""
    resource = yaml.safe_load(emulated.manifest.read_text())
    config = yaml.safe_load(resource["spec"]["serveConfigV2"])
    target = emulated.plan.engines[0].deployment_name
    config["applications"][0]["deployments"] = [
        {"name": target, "max_ongoing_requests": max_ongoing}
    ]
    resource["spec"]["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)
    path = emulated.manifest.with_name("rayservice-changed.yaml")
    path.write_text(yaml.safe_dump(resource, sort_keys=False))
    return path


def test_changed_serve_config_updates_in_place_under_load(emulated):
    changed = changed_manifest(emulated, max_ongoing=7)
    nodes_before = node_ids()
    with Load([m.id for m in emulated.plan.spec.models]) as load:
        result = rayfleet("emulate", str(changed), *EMULATE_ARGS)
    print(result.stdout[-3000:], result.stderr[-2000:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "updating serveConfigV2 in place" in result.stdout
    failures = [o for o in load.outcomes if o != 200]
    assert len(load.outcomes) >= 5, "the load generator hardly ran"
    assert failures == [], (
        f"{len(failures)} of {len(load.outcomes)} requests failed: {failures[:5]}"
    )
    details = local.serve_details(DASHBOARD)
    app = details["applications"][emulated.plan.spec.name]
    target = app["deployments"][emulated.plan.engines[0].deployment_name]
    assert target["deployment_config"]["max_ongoing_requests"] == 7
    nodes_after = node_ids()
    assert nodes_after == nodes_before  # the same cluster: nothing was rebuilt
