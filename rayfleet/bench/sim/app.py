"""Serve the simulator behind RayFleet's own ingress.

``build_sim_app(args)`` takes exactly what ``rayfleet.deployments.app.build_app`` takes
(the ``args`` of ``render_serve_config``'s application), plus an optional ``sim`` dict
of ``SimParams`` for every engine. Each engine's LLMConfig keeps its deployment config
(names, replicas, request router, max_ongoing_requests) and engine kwargs, but runs
``SimLLMServer`` without a placement group or accelerator; then ``build_app`` itself
builds the app, so the ingress and the routing are the ones served for real.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform.plan import Plan

if TYPE_CHECKING:
    from ray.serve.deployment import Application

SIM_APP_BUILDER = "rayfleet.bench.sim.app:build_sim_app"
SIM_SERVER_CLS = "rayfleet.bench.sim.server:SimLLMServer"
# Engine placement that a simulated replica does not need (and a laptop cannot give).
_ENGINE_ONLY_KEYS = ("placement_group_config", "accelerator_type", "accelerator_config")


def sim_llm_config(llm_config: dict[str, Any], sim: dict[str, Any] | None = None) -> dict[str, Any]:
    """A rendered LLMConfig dict turned into a simulated one (the engine's own
    ``experimental_configs["sim"]`` wins over ``sim``)."""
    config = copy.deepcopy(llm_config)
    for key in _ENGINE_ONLY_KEYS:
        config.pop(key, None)
    config["server_cls"] = SIM_SERVER_CLS
    experimental = dict(config.get("experimental_configs") or {})
    experimental["sim"] = {**(sim or {}), **(experimental.get("sim") or {})}
    config["experimental_configs"] = experimental
    deployment = config.setdefault("deployment_config", {})
    # Label selectors apply to placement-group bundles, which simulated replicas lack.
    deployment.pop("placement_group_bundle_label_selector", None)
    return config


def sim_app_args(args: dict[str, Any]) -> dict[str, Any]:
    """``build_app`` args with every engine simulated."""
    sim = args.get("sim")
    simulated = {key: value for key, value in args.items() if key != "sim"}
    simulated["engines"] = [
        {**engine, "llm_config": sim_llm_config(engine["llm_config"], sim)}
        for engine in args["engines"]
    ]
    return simulated


def build_sim_app(args: dict[str, Any]) -> Application:
    """The Serve app builder for ``import_path: rayfleet.bench.sim.app:build_sim_app``."""
    # Imported here: it loads vLLM (seconds), which the CLI's renderers never need.
    from rayfleet.deployments.app import build_app

    return build_app(sim_app_args(args))


def render_sim_serve_config(plan: Plan, sim: dict[str, Any] | None = None) -> dict[str, Any]:
    """``render_serve_config(plan)`` served by simulated engines."""
    config = render_serve_config(plan)
    for application in config["applications"]:
        application["import_path"] = SIM_APP_BUILDER
        if sim:
            application["args"]["sim"] = sim
    return config


def sim_engine(
    model_id: str,
    num_replicas: int,
    *,
    sim: dict[str, Any] | None = None,
    max_model_len: int = 4096,
    request_router_config: dict[str, Any] | None = None,
    max_ongoing_requests: int = 64,
) -> dict[str, Any]:
    """One engine entry of ``build_sim_app``'s args, without a spec or plan."""
    deployment: dict[str, Any] = {
        "name": model_id.replace("/", "--"),
        "num_replicas": num_replicas,
        "max_ongoing_requests": max_ongoing_requests,
    }
    if request_router_config is not None:
        deployment["request_router_config"] = request_router_config
    llm_config = {
        "model_loading_config": {"model_id": model_id, "model_source": model_id},
        "engine_kwargs": {"max_model_len": max_model_len},
        "deployment_config": deployment,
        "log_engine_metrics": True,
    }
    return {"model_id": model_id, "role": "unified", "llm_config": sim_llm_config(llm_config, sim)}
