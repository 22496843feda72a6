"""Pool → LLMConfig mapping for the three backends, checked against Ray's own LLMConfig."""

from pathlib import Path

import pytest
from ray.serve.llm import LLMConfig

from rayfleet.deployments.llm_config import (
    ENV_CORE_OFFSET,
    ENV_EXPECT_TPU,
    SERVER_CLS,
    router_config,
)
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform.plan import GROUP_LABEL, resolve
from rayfleet.platform.spec import Router, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def engine_configs(spec):
    app = render_serve_config(resolve(spec))["applications"][0]
    return [e["llm_config"] for e in app["args"]["engines"]]


def test_cpu_backend_never_asks_for_accelerators():
    config = engine_configs(load_spec(EXAMPLES / "cpu-tiny.yaml"))[0]
    bundles = config["placement_group_config"]["bundles"]
    assert bundles == [{"CPU": 1}]
    assert all(set(b) == {"CPU"} for b in bundles)
    assert "accelerator_type" not in config
    assert config["engine_kwargs"]["dtype"] == "float32"
    assert config["engine_kwargs"]["enforce_eager"] is True
    env = config["runtime_env"]["env_vars"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env[ENV_CORE_OFFSET] == "0"
    assert config["server_cls"] == SERVER_CLS
    ray_config = LLMConfig.model_validate(config)
    assert ray_config.model_id == "tiny-llama"


def test_gpu_backend():
    config = engine_configs(load_spec(EXAMPLES / "gpu-l4-llama-8b.yaml"))[0]
    assert config["accelerator_type"] == "L4"
    assert config["placement_group_config"]["bundles"] == [{"GPU": 1}]
    assert config["engine_kwargs"]["tensor_parallel_size"] == 1
    assert config["engine_kwargs"]["dtype"] == "bfloat16"  # from the spec, over defaults
    autoscaling = config["deployment_config"]["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (1, 4)
    assert "num_replicas" not in config["deployment_config"]
    assert LLMConfig.model_validate(config).accelerator_type == "L4"


def test_tpu_backend_uses_whole_slice():
    config = engine_configs(load_spec(EXAMPLES / "tpu-v6e-2x4-llama-8b.yaml"))[0]
    assert config["accelerator_type"] == "TPU-V6E"
    assert config["accelerator_config"] == {"kind": "tpu", "topology": "2x4"}
    assert config["engine_kwargs"]["tensor_parallel_size"] == 8
    assert config["runtime_env"]["env_vars"][ENV_EXPECT_TPU] == "v6e:8"
    assert "placement_group_config" not in config
    ray_config = LLMConfig.model_validate(config)
    assert ray_config.accelerator_config is not None
    assert ray_config.accelerator_config.kind == "tpu"


def test_multi_group_plans_pin_engines_by_label():
    configs = engine_configs(load_spec(EXAMPLES / "gpu-h100-pd-llama-70b.yaml"))
    selectors = [c["deployment_config"]["placement_group_bundle_label_selector"] for c in configs]
    groups = {s[0][GROUP_LABEL] for s in selectors}
    assert len(groups) == 2
    for config, selector in zip(configs, selectors, strict=True):
        assert len(selector) == len(config["placement_group_config"]["bundles"])


def test_pool_kwargs_override_model_kwargs():
    spec = parse_spec(
        {
            "models": [
                {
                    "id": "m",
                    "engine_kwargs": {"max_num_seqs": 8, "seed": 1},
                    "pools": {"unified": {"engine_kwargs": {"max_num_seqs": 4}}},
                }
            ]
        }
    )
    kwargs = engine_configs(spec)[0]["engine_kwargs"]
    assert kwargs["max_num_seqs"] == 4 and kwargs["seed"] == 1


@pytest.mark.parametrize(
    ("policy", "router_class"),
    [
        ("pow2", None),
        ("ray-prefix", "ray.serve.llm.request_router:PrefixCacheAffinityRouter"),
        ("rayfleet", "rayfleet.router.ray_router:RayFleetRouter"),
    ],
)
def test_router_choice(policy, router_class):
    config = router_config(Router(policy=policy))
    assert config is not None
    assert config.get("request_router_class") == router_class
