"""The simulated app: RayFleet's rendered config, served by SimLLMServer engines."""

from __future__ import annotations

from typing import Any

from rayfleet.bench.sim.app import (
    SIM_APP_BUILDER,
    SIM_SERVER_CLS,
    build_sim_app,
    render_sim_serve_config,
    sim_app_args,
    sim_engine,
    sim_llm_config,
)
from rayfleet.bench.sim.server import SimLLMServer
from rayfleet.deployments.serve_config import render_app_args
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import default_spec_path, load_spec

SIM = {"tokenizer": "words", "time_scale": 0.5}


def plan() -> Any:
    return resolve(load_spec(default_spec_path()))


def test_rendered_engines_lose_their_placement_but_keep_routing() -> None:
    rendered = render_app_args(plan())["engines"][0]["llm_config"]
    simulated = sim_llm_config(rendered, SIM)
    assert simulated["server_cls"] == SIM_SERVER_CLS
    assert "placement_group_config" not in simulated
    assert "placement_group_bundle_label_selector" not in simulated["deployment_config"]
    for key in ("name", "request_router_config", "max_ongoing_requests"):
        assert simulated["deployment_config"].get(key) == rendered["deployment_config"].get(key)
    assert simulated["engine_kwargs"] == rendered["engine_kwargs"]
    assert simulated["experimental_configs"]["sim"] == SIM
    assert "server_cls" in rendered and rendered["server_cls"] != SIM_SERVER_CLS  # not mutated


def test_an_engines_own_sim_settings_win() -> None:
    engine = sim_engine("m", 2, sim={"time_scale": 3.0, "seed": 4})
    args = sim_app_args({"engines": [engine], "sim": {"time_scale": 1.0, "block_size": 16}})
    sim = args["engines"][0]["llm_config"]["experimental_configs"]["sim"]
    assert sim == {"time_scale": 3.0, "seed": 4, "block_size": 16}
    assert "sim" not in args


def test_render_sim_serve_config_points_at_the_sim_builder() -> None:
    config = render_sim_serve_config(plan(), SIM)
    (application,) = config["applications"]
    assert application["import_path"] == SIM_APP_BUILDER
    assert application["args"]["sim"] == SIM
    assert application["args"]["engines"]  # the same engines the real app gets


def test_build_sim_app_binds_rayfleets_ingress_to_sim_engines() -> None:
    app = build_sim_app({**render_app_args(plan()), "sim": SIM})
    ingress: Any = app._bound_deployment
    assert ingress.name == "ingress"
    engines = ingress.init_kwargs["llm_deployments"]
    assert engines
    for deployment in engines.values():
        bound = deployment._bound_deployment
        assert bound.func_or_class is SimLLMServer
        assert bound._replica_config.placement_group_bundles is None
        assert bound.ray_actor_options["num_cpus"] == 0
        assert bound.init_kwargs["llm_config"].experimental_configs["sim"] == SIM


def test_build_llm_deployment_accepts_the_sim_server_class() -> None:
    from ray.serve.llm import LLMConfig, build_llm_deployment

    config = LLMConfig.model_validate(
        {
            "model_loading_config": {"model_id": "m", "model_source": "m"},
            "experimental_configs": {"sim": SIM},
            "deployment_config": {"num_replicas": 2},
        }
    )
    bound: Any = build_llm_deployment(config, deployment_cls=SimLLMServer)._bound_deployment
    assert bound.func_or_class is SimLLMServer
    assert bound._replica_config.placement_group_bundles is None
