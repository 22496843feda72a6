"""Map a planned engine to a ``ray.serve.llm.LLMConfig`` (as a plain dict).

Pure Python: the serve-config renderer embeds these dicts, and the app builder
turns them into LLMConfig objects on the cluster. One function per backend keeps
the CPU/GPU/TPU differences in one readable place.
"""

from __future__ import annotations

from typing import Any

from rayfleet.deployments.pd_config import pd_settings, validate_pools_agree
from rayfleet.platform.accelerators import gpu_type, tpu_slice
from rayfleet.platform.plan import GROUP_LABEL, Engine
from rayfleet.platform.spec import CpuAccelerator, GpuAccelerator, Router, TpuAccelerator

SERVER_CLS = "rayfleet.deployments.server:RayFleetLLMServer"
# Skips Ray's per-node download when it has nothing to fetch (see replica_start.py).
NODE_INIT_CALLBACK = "rayfleet.deployments.replica_start:SkipEmptyNodeDownload"
ROUTER_CLASSES = {
    "ray-prefix": "ray.serve.llm.request_router:PrefixCacheAffinityRouter",
    "rayfleet": "rayfleet.router.ray_router:RayFleetRouter",
}
# Env vars the replica reads before starting its engine (see server.prepare_replica).
ENV_CORE_OFFSET = "RAYFLEET_CPU_CORE_OFFSET"
ENV_CPUS_PER_ENGINE = "RAYFLEET_CPUS_PER_ENGINE"
ENV_EXPECT_TPU = "RAYFLEET_EXPECT_TPU"


def _cpu_backend(acc: CpuAccelerator, engine: Engine) -> dict[str, Any]:
    return {
        # CPU-only bundles: any GPU/TPU key here would select vLLM's GPU backend.
        "placement_group_config": {"bundles": [{"CPU": acc.cpus}], "strategy": "PACK"},
        "engine_kwargs": {"dtype": "float32", "enforce_eager": True},
        "env_vars": {
            "VLLM_CPU_KVCACHE_SPACE": str(acc.kv_cache_gib),
            ENV_CORE_OFFSET: str(engine.cpu_core_offset),
            ENV_CPUS_PER_ENGINE: str(acc.cpus),
        },
        # The replica actor takes no CPU of its own; the engine's bundle holds it.
        "ray_actor_options": {"num_cpus": 0},
    }


def _gpu_backend(acc: GpuAccelerator, engine: Engine) -> dict[str, Any]:
    return {
        "accelerator_type": gpu_type(acc.type).ray_accelerator_type,
        "placement_group_config": {
            "bundles": [{"GPU": 1}] * acc.count,
            "strategy": "STRICT_PACK",
        },
        "engine_kwargs": {"tensor_parallel_size": acc.count},
        "env_vars": {},
        "ray_actor_options": {},
    }


def _tpu_backend(acc: TpuAccelerator, engine: Engine) -> dict[str, Any]:
    tpu = tpu_slice(acc.version, acc.topology)
    return {
        "accelerator_type": tpu.ray_accelerator_type,
        # With a topology, Ray Serve LLM reserves the whole slice at replica start.
        "accelerator_config": {"kind": "tpu", "topology": acc.topology},
        "engine_kwargs": {"tensor_parallel_size": tpu.chips},
        "env_vars": {ENV_EXPECT_TPU: f"{acc.version}:{tpu.chips}"},
        "ray_actor_options": {},
    }


def router_config(router: Router) -> dict[str, Any] | None:
    """``request_router_config`` for the engine deployments (None keeps Ray's pow2)."""
    if router.policy == "pow2":
        return {"request_routing_stats_period_s": router.stats_period_s}
    config: dict[str, Any] = {
        "request_router_class": ROUTER_CLASSES[router.policy],
        "request_routing_stats_period_s": router.stats_period_s,
    }
    if router.policy == "rayfleet":
        config["request_router_kwargs"] = {"settings": router.model_dump(mode="json")}
    return config


def engine_kwargs(engine: Engine, backend_defaults: dict[str, Any]) -> dict[str, Any]:
    """Backend defaults < model-wide kwargs < pool kwargs; spec fields fill the rest."""
    model = engine.model
    kwargs: dict[str, Any] = {
        "max_model_len": model.max_model_len,
        "enable_prefix_caching": True,
        **backend_defaults,
    }
    if model.tokenizer:
        kwargs["tokenizer"] = model.tokenizer
    if model.chat_template:
        kwargs["chat_template"] = model.chat_template
    kwargs.update(model.engine_kwargs)
    kwargs.update(engine.pool.engine_kwargs)
    return kwargs


def deployment_config(engine: Engine, router: Router, actor_options: dict[str, Any]) -> dict:
    pool = engine.pool
    config: dict[str, Any] = {
        "name": engine.deployment_name,
        "max_ongoing_requests": pool.max_ongoing_requests,
        "max_queued_requests": pool.max_queued_requests,
        "request_router_config": router_config(router),
        "ray_actor_options": actor_options,
    }
    if pool.autoscaling is not None:
        config["autoscaling_config"] = {
            "min_replicas": pool.autoscaling.min_replicas,
            "max_replicas": pool.autoscaling.max_replicas,
            "target_ongoing_requests": pool.autoscaling.target_ongoing_requests,
        }
    else:
        config["num_replicas"] = pool.replicas or 1
    return config


def _backend_engine_kwargs(acc: Any, engine: Engine) -> dict[str, Any]:
    if isinstance(acc, CpuAccelerator):
        return _cpu_backend(acc, engine)["engine_kwargs"]
    if isinstance(acc, GpuAccelerator):
        return _gpu_backend(acc, engine)["engine_kwargs"]
    return _tpu_backend(acc, engine)["engine_kwargs"]


def _add_disaggregation(config: dict[str, Any], engine: Engine, router: Router) -> None:
    """KV transfer on both pools; the decode side also gets the per-request policy."""
    model = engine.model
    validate_pools_agree(model, lambda acc: _backend_engine_kwargs(acc, engine))
    kv_transfer, experimental = pd_settings(model, engine.role, router)
    # A kv_transfer_config in the spec's engine kwargs wins (e.g. a shared path on a cluster).
    config["engine_kwargs"].setdefault("kv_transfer_config", kv_transfer)
    config["experimental_configs"] = experimental


def llm_config(engine: Engine, router: Router, place_by_group: bool) -> dict[str, Any]:
    """The LLMConfig fields for one engine deployment."""
    acc = engine.pool.accelerator
    if isinstance(acc, CpuAccelerator):
        backend = _cpu_backend(acc, engine)
    elif isinstance(acc, GpuAccelerator):
        backend = _gpu_backend(acc, engine)
    else:
        backend = _tpu_backend(acc, engine)

    config: dict[str, Any] = {
        "model_loading_config": {"model_id": engine.model.id, "model_source": engine.model.source},
        "engine_kwargs": engine_kwargs(engine, backend["engine_kwargs"]),
        "deployment_config": deployment_config(engine, router, backend["ray_actor_options"]),
        "runtime_env": {"env_vars": backend["env_vars"]},
        "server_cls": SERVER_CLS,
        "log_engine_metrics": True,
        "callback_config": {"callback_class": NODE_INIT_CALLBACK},
    }
    if engine.role != "unified":
        _add_disaggregation(config, engine, router)
    for key in ("accelerator_type", "accelerator_config", "placement_group_config"):
        if key in backend:
            config[key] = backend[key]
    bundles = backend.get("placement_group_config", {}).get("bundles")
    if place_by_group and bundles:
        # TPU slices are placed by Ray's own slice placement group instead.
        selector = {GROUP_LABEL: engine.group.name}
        config["deployment_config"]["placement_group_bundle_label_selector"] = [selector] * len(
            bundles
        )
    return config
