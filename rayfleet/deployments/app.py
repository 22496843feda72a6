"""The Serve application builder named in the rendered config's ``import_path``.

It only instantiates what the renderer produced: LLMConfigs become engine
deployments, and the ingress is bound to them; or, when the plan put the engine in
the ingress (``engine_in_ingress``), one deployment runs both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, build_llm_deployment

from rayfleet.deployments.engine_ingress import EngineIngress
from rayfleet.deployments.ingress import RayFleetIngress, serve_ingress
from rayfleet.deployments.pd import build_pd_deployments
from rayfleet.platform.spec import EMBEDDED_TINY
from rayfleet.platform.tiny_model import ensure_tiny


class EngineArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str
    role: Literal["unified", "prefill", "decode"]
    llm_config: dict[str, Any]


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engines: list[EngineArgs] = Field(min_length=1)
    api_key_env: str | None = None
    request_timeout_s: float = 600.0
    ingress_replicas: int = Field(1, ge=1)
    engine_in_ingress: bool = False


def _local_source(source: str) -> str:
    return str(ensure_tiny()) if source == EMBEDDED_TINY else source


def _to_llm_config(raw: dict[str, Any]) -> LLMConfig:
    loading = dict(raw["model_loading_config"])
    loading["model_source"] = _local_source(loading["model_source"])
    return LLMConfig.model_validate({**raw, "model_loading_config": loading})


def _local_root(config: LLMConfig) -> str | None:
    source = config.model_dump()["model_loading_config"]["model_source"]
    return (
        str(Path(source).resolve()) if isinstance(source, str) and Path(source).is_dir() else None
    )


def _engine_deployments(
    engines: list[EngineArgs],
) -> tuple[dict[str, LLMConfig], dict[str, Application]]:
    """Per model: the LLMConfig the ingress describes, and the deployment it calls.

    A unified model's engine is called directly; a split model's decode engine is
    called, and it prefills on the prefill engine when that pays (see pd.py).
    """
    by_model: dict[str, dict[str, LLMConfig]] = {}
    for e in engines:
        by_model.setdefault(e.model_id, {})[e.role] = _to_llm_config(e.llm_config)
    configs: dict[str, LLMConfig] = {}
    deployments: dict[str, Application] = {}
    for model_id, roles in by_model.items():
        if set(roles) == {"unified"}:
            configs[model_id] = roles["unified"]
            deployments[model_id] = _deployment(roles["unified"])
        elif set(roles) == {"prefill", "decode"}:
            configs[model_id] = roles["decode"]
            deployments[model_id] = build_pd_deployments(
                roles["prefill"], roles["decode"], _deployment
            )
        else:
            raise ValueError(
                f"model {model_id!r} has engines {sorted(roles)}; expected one unified "
                "engine, or one prefill and one decode engine"
            )
    return configs, deployments


def _deployment(config: LLMConfig, **options: Any) -> Application:
    return build_llm_deployment(
        config, override_serve_options={"name": config.deployment_config["name"]}, **options
    )


def _ingress_options(parsed: AppArgs, configs: dict[str, LLMConfig]) -> dict[str, Any]:
    return {
        "model_roots": {m: _local_root(c) for m, c in configs.items()},
        "max_model_lens": {m: int(c.engine_kwargs["max_model_len"]) for m, c in configs.items()},
        "api_key_env": parsed.api_key_env,
        "request_timeout_s": parsed.request_timeout_s,
    }


def _engine_in_ingress_app(parsed: AppArgs) -> Application:
    engines = parsed.engines
    if len(engines) != 1 or engines[0].role != "unified" or parsed.ingress_replicas != 1:
        raise ValueError(
            "engine_in_ingress needs exactly one unified engine and one ingress replica; "
            f"got engines {[(e.model_id, e.role) for e in engines]} and "
            f"ingress_replicas={parsed.ingress_replicas}"
        )
    config = _to_llm_config(engines[0].llm_config)
    if config.deployment_config.get("num_replicas") != 1:
        raise ValueError("engine_in_ingress needs an engine deployment of num_replicas: 1")
    options = _ingress_options(parsed, {config.model_id: config})
    return build_llm_deployment(
        config,
        deployment_cls=serve_ingress(EngineIngress),
        override_serve_options={"name": config.deployment_config["name"]},
        bind_kwargs={"model_card": to_model_metadata(config.model_id, config), **options},
    )


def build_app(args: dict[str, Any]) -> Application:
    parsed = AppArgs.model_validate(args)
    if parsed.engine_in_ingress:
        return _engine_in_ingress_app(parsed)
    configs, deployments = _engine_deployments(parsed.engines)
    ingress: Any = serve.deployment(
        serve_ingress(RayFleetIngress),
        name="ingress",
        num_replicas=parsed.ingress_replicas,
        max_ongoing_requests=1000,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(
        llm_deployments=deployments,
        model_cards={m: to_model_metadata(m, c) for m, c in configs.items()},
        **_ingress_options(parsed, configs),
    )
