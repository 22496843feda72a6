"""The simulated app: RayFleet's rendered config, served by SimLLMServer engines."""

from __future__ import annotations

from typing import Any

import pytest

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
from rayfleet.deployments.engine_ingress import EngineIngress
from rayfleet.deployments.serve_config import render_app_args
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import default_spec_path, load_spec, parse_spec

SIM = {"tokenizer": "words", "time_scale": 0.5}


def plan(replicas: int = 1) -> Any:
    raw = load_spec(default_spec_path()).model_dump(exclude_unset=True)
    raw["models"][0]["pools"]["unified"]["replicas"] = replicas
    return resolve(parse_spec(raw))


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
    app = build_sim_app({**render_app_args(plan(replicas=2)), "sim": SIM})
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


def test_a_single_replica_sim_engine_runs_inside_the_ingress() -> None:
    args = render_app_args(plan())
    assert args["engine_in_ingress"]
    bound: Any = build_sim_app({**args, "sim": SIM})._bound_deployment
    assert issubclass(bound.func_or_class, EngineIngress)
    assert bound.name == args["engines"][0]["llm_config"]["deployment_config"]["name"]
    assert bound.num_replicas == 1
    assert bound._replica_config.placement_group_bundles is None
    config = bound.init_kwargs["llm_config"]
    assert config.server_cls is SimLLMServer and config.experimental_configs["sim"] == SIM
    assert set(bound.init_kwargs) >= {"model_card", "model_roots", "max_model_lens"}


def test_engine_in_ingress_refuses_what_it_cannot_serve() -> None:
    args = render_app_args(plan(replicas=2))
    with pytest.raises(ValueError, match="num_replicas: 1"):
        build_sim_app({**args, "engine_in_ingress": True})
    two = {**args, "engines": args["engines"] * 2, "engine_in_ingress": True}
    with pytest.raises(ValueError, match="exactly one unified engine"):
        build_sim_app(two)


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
