"""`rayfleet emulate`'s pure parts: manifest → raylets, and the serve-config rewrite."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.kuberay import render_rayservice
from rayfleet.kuberay.emulate import group_counts, worker_args
from rayfleet.kuberay.emulate_plan import (
    Manifest,
    ManifestError,
    RewriteOptions,
    model_bytes,
    node_plan,
    parse_manifest,
    rewrite_serve_config,
)
from rayfleet.platform.plan import GROUP_LABEL, resolve
from rayfleet.platform.spec import EMBEDDED_TINY, load_spec

PD = "gpu-h100-pd-llama-70b.yaml"


def manifest_of(examples_dir: Path, name: str) -> Manifest:
    plan = resolve(load_spec(examples_dir / name))
    resource = render_rayservice(plan, render_serve_config(plan))
    return parse_manifest(yaml.safe_dump(resource), name)


def llm_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    engines = config["applications"][0]["args"]["engines"]
    return {e["llm_config"]["deployment_config"]["name"]: e["llm_config"] for e in engines}


def test_pd_manifest_gives_one_raylet_per_group_with_its_labels_and_gpus(examples_dir):
    nodes = node_plan(manifest_of(examples_dir, PD), scale=1.0, max_nodes=4)
    assert [n.group for n in nodes] == [
        "gpu-nvidia-h100-80gb-x4-prefill",
        "gpu-nvidia-h100-80gb-x4-decode",
    ]
    for node in nodes:
        assert node.labels[GROUP_LABEL] == node.group
        assert node.labels["ray.io/accelerator-type"] == "H100"
        assert node.num_gpus == 4
        assert node.env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"  # the pod's Serve settings
        assert "HF_TOKEN" not in node.env  # secretKeyRefs are not resolved here


def test_multi_host_tpu_slice_gives_a_raylet_per_host_with_its_chips(examples_dir):
    nodes = node_plan(manifest_of(examples_dir, "tpu-v6e-4x4-llama-70b.yaml"), 1.0, 8)
    assert len(nodes) == 4  # v6e 4x4: 4 hosts of 4 chips
    assert {n.resources_arg() for n in nodes} == {json.dumps({"TPU": 4.0})}
    assert nodes[0].labels["ray.io/tpu-topology"] == "4x4"


def test_scale_multiplies_replicas_and_max_nodes_caps_them(examples_dir):
    manifest = manifest_of(examples_dir, "gpu-l4-llama-8b.yaml")
    assert len(node_plan(manifest, scale=3, max_nodes=8)) == 3
    assert len(node_plan(manifest, scale=3, max_nodes=2)) == 2


def test_cap_below_the_number_of_groups_is_refused(examples_dir):
    with pytest.raises(ManifestError, match="2 worker groups"):
        node_plan(manifest_of(examples_dir, PD), 1.0, max_nodes=1)


def test_each_raylet_gets_its_own_agent_port_labels_and_gpus(examples_dir):
    nodes = node_plan(manifest_of(examples_dir, PD), 1.0, 4)
    args = [worker_args(n) for n in nodes]
    ports = {a for arg in args for a in arg if a.startswith("--dashboard-agent-listen-port")}
    assert len(ports) == 2
    (labels,) = [a.removeprefix("--labels=") for a in args[1] if a.startswith("--labels=")]
    assert set(labels.split(",")) == {
        f"{GROUP_LABEL}=gpu-nvidia-h100-80gb-x4-decode",
        "ray.io/accelerator-type=H100",
    }
    assert "--num-gpus=4" in args[0]
    assert any(a.startswith("--object-store-memory=") for a in args[0])


def test_gpu_engines_become_cpu_engines_on_their_own_group(examples_dir):
    manifest = manifest_of(examples_dir, PD)
    original = copy.deepcopy(manifest.serve_config)
    nodes = node_plan(manifest, 1.0, 4)
    assert manifest.serve_config is not None
    rewrite = rewrite_serve_config(manifest.serve_config, nodes, RewriteOptions())
    assert manifest.serve_config == original  # the manifest's own config is untouched
    assert rewrite.serve_config["proxy_location"] == "HeadOnly"
    assert rewrite.serve_config["http_options"]["host"] == "127.0.0.1"
    for name, llm in llm_configs(rewrite.serve_config).items():
        assert "accelerator_type" not in llm
        assert llm["placement_group_config"]["bundles"] == [{"CPU": 1}]
        assert llm["engine_kwargs"]["dtype"] == "float32"
        assert llm["engine_kwargs"]["enforce_eager"] is True
        assert "tensor_parallel_size" not in llm["engine_kwargs"]
        assert llm["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
        selector = llm["deployment_config"]["placement_group_bundle_label_selector"]
        role = name.rsplit("-", 1)[1]
        assert selector == [{GROUP_LABEL: f"gpu-nvidia-h100-80gb-x4-{role}"}]
        assert llm["model_loading_config"] == {
            "model_id": "llama-3.1-70b",
            "model_source": EMBEDDED_TINY,
        }
        assert llm["engine_kwargs"]["max_model_len"] == 2048
    notes = "\n".join(rewrite.notes)
    assert "H100 engine → CPU vLLM engine" in notes
    assert "meta-llama/Llama-3.1-70B-Instruct → rayfleet:tiny" in notes


def test_tpu_engine_gets_a_selector_for_its_slice_group(examples_dir):
    manifest = manifest_of(examples_dir, "tpu-v6e-2x4-llama-8b.yaml")
    assert manifest.serve_config is not None
    nodes = node_plan(manifest, 1.0, 4)
    rewrite = rewrite_serve_config(manifest.serve_config, nodes, RewriteOptions())
    (llm,) = llm_configs(rewrite.serve_config).values()
    assert "accelerator_config" not in llm
    assert "RAYFLEET_EXPECT_TPU" not in llm["runtime_env"]["env_vars"]
    selector = llm["deployment_config"]["placement_group_bundle_label_selector"]
    assert selector == [{GROUP_LABEL: nodes[0].group}]


def test_pool_replicas_scale_and_stay_within_the_emulated_group(examples_dir):
    manifest = manifest_of(examples_dir, PD)
    assert manifest.serve_config is not None
    nodes = node_plan(manifest, scale=2, max_nodes=4)  # 2 prefill + 2 decode raylets
    rewrite = rewrite_serve_config(manifest.serve_config, nodes, RewriteOptions(scale=2))
    decode = llm_configs(rewrite.serve_config)["llama-3.1-70b-decode"]
    autoscaling = decode["deployment_config"]["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (2, 2)  # 8 capped at 2


def test_model_override_and_models_that_fit_are_kept(examples_dir, tmp_path):
    spec = yaml.safe_load((examples_dir / "cpu-tiny.yaml").read_text())
    spec["http"]["host"] = "0.0.0.0"  # a RayService must listen beyond loopback
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(spec))
    manifest = manifest_of(tmp_path, "cpu.yaml")
    assert manifest.serve_config is not None
    nodes = node_plan(manifest, 1.0, 4)
    kept = rewrite_serve_config(manifest.serve_config, nodes, RewriteOptions())
    (llm,) = llm_configs(kept.serve_config).values()
    assert llm["model_loading_config"]["model_source"] == EMBEDDED_TINY
    assert not [n for n in kept.notes if "model" in n]
    swapped = rewrite_serve_config(manifest.serve_config, nodes, RewriteOptions(model="/m/x"))
    (llm,) = llm_configs(swapped.serve_config).values()
    assert llm["model_loading_config"]["model_source"] == "/m/x"
    assert any("rayfleet:tiny → /m/x (--model)" in n for n in swapped.notes)


def test_gpu_kv_connector_becomes_the_cpu_file_connector(examples_dir):
    manifest = manifest_of(examples_dir, PD)
    assert manifest.serve_config is not None
    for engine in manifest.serve_config["applications"][0]["args"]["engines"]:
        engine["llm_config"]["engine_kwargs"]["kv_transfer_config"] = {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_both",
        }
    rewrite = rewrite_serve_config(
        manifest.serve_config, node_plan(manifest, 1, 4), RewriteOptions()
    )
    for llm in llm_configs(rewrite.serve_config).values():
        assert llm["engine_kwargs"]["kv_transfer_config"]["kv_connector"] == "ExampleConnector"


def test_model_size_is_read_from_the_name_or_folder(tmp_path):
    assert model_bytes("meta-llama/Llama-3.1-8B-Instruct") == 32 * 10**9
    assert model_bytes("Qwen/Qwen2.5-0.5B") == 2 * 10**9
    assert model_bytes(EMBEDDED_TINY) == 0
    assert model_bytes("org/mystery-model") is None
    (tmp_path / "model.safetensors").write_bytes(b"0" * 1000)
    assert model_bytes(str(tmp_path)) == 2000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Deployment", "kind must be RayService or RayCluster"),
        ("kind: RayService\nspec: {}", "spec.rayClusterConfig is missing"),
        (
            "kind: RayService\nspec: {rayClusterConfig: {}, serveConfigV2: 'x: 1'}",
            "serveConfigV2 has no `applications`",
        ),
        ("kind: RayService\nspec: {rayClusterConfig: {}}", "serveConfigV2 must be a YAML string"),
    ],
)
def test_bad_manifests_name_the_field(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(text)


def test_raycluster_has_no_serve_config(examples_dir):
    plan = resolve(load_spec(examples_dir / PD))
    from rayfleet.kuberay import render_raycluster

    manifest = parse_manifest(yaml.safe_dump(render_raycluster(plan)))
    assert manifest.serve_config is None
    assert len(node_plan(manifest, 1, 4)) == 2


def test_group_counts_ignore_the_head():
    labels = [{"ray.io/node-group": "headgroup"}, {}, {"ray.io/node-group": "a"}]
    labels.append({"ray.io/node-group": "a"})
    assert group_counts(labels) == {"a": 2}
