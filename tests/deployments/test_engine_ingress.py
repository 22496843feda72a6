"""The ingress with its engine in-process, over the simulated engine (no Ray cluster)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import ray
from deployments_fakes import is_openai_error, mount
from ray.serve._private.config import DeploymentConfig
from ray.serve.llm import LLMConfig

from rayfleet.bench.sim.app import SIM_SERVER_CLS
from rayfleet.bench.sim.server import SimLLMServer
from rayfleet.deployments.engine_ingress import EngineIngress, pool_limits
from rayfleet.deployments.server import RayFleetLLMServer

MODEL = "sim-model"
FAST_SIM = {"tokenizer": "words", "time_scale": 1e3}
# The fixture shuts the ingress down; garbage collection calls the async __del__ again.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'EngineIngress.__del__'")


def llm_config(running: int = 1, queued: int = 4, sim: dict[str, Any] | None = None) -> LLMConfig:
    return LLMConfig.model_validate(
        {
            "model_loading_config": {"model_id": MODEL, "model_source": MODEL},
            "engine_kwargs": {"max_model_len": 2048},
            "experimental_configs": {
                "sim": {"tokenizer": "words", "time_scale": 1e3, **(sim or {})}
            },
            "deployment_config": {
                "name": "sim-model-unified",
                "num_replicas": 1,
                "max_ongoing_requests": running,
                "max_queued_requests": queued,
                "request_router_config": {"request_routing_stats_period_s": 1.0},
            },
            "server_cls": SIM_SERVER_CLS,
        }
    )


async def started(config: LLMConfig) -> EngineIngress:
    ingress = EngineIngress.__new__(EngineIngress)
    await ingress.__init__(  # type: ignore[misc]
        config, model_card=None, model_roots={MODEL: None}, max_model_lens={MODEL: 2048}
    )
    return ingress


@pytest.fixture
async def api() -> AsyncIterator[tuple[EngineIngress, httpx.AsyncClient]]:
    ingress = await started(llm_config())
    transport = httpx.ASGITransport(app=mount(ingress))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        yield ingress, client
    await ingress.__del__()


async def test_the_engine_is_the_configured_server_running_in_process(api: Any) -> None:
    ingress, client = api
    assert isinstance(ingress._engine, SimLLMServer) and ingress._engine.engine is not None
    assert ingress._engine._get_batch_interval_ms() == 0  # nothing to batch in-process
    await ingress.check_health()
    models = (await client.get("/v1/models")).json()["data"]
    assert [m["id"] for m in models] == [MODEL]


async def test_completion_and_chat(api: Any) -> None:
    _, client = api
    body = {"model": MODEL, "prompt": "a b c d", "max_tokens": 3, "ignore_eos": True}
    answer = (await client.post("/v1/completions", json=body)).json()
    assert answer["usage"]["completion_tokens"] == 3
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    reply = (await client.post("/v1/chat/completions", json=chat)).json()
    assert reply["choices"][0]["message"]["role"] == "assistant"


async def test_streamed_completion_ends_with_done(api: Any) -> None:
    _, client = api
    body = {"model": MODEL, "prompt": "a b c", "max_tokens": 4, "ignore_eos": True, "stream": True}
    response = await client.post("/v1/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert sum(len(json.loads(e)["choices"]) for e in events[:-1]) >= 4


async def test_unknown_model_is_an_openai_404(api: Any) -> None:
    _, client = api
    response = await client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert response.status_code == 404 and is_openai_error(response.json())


async def test_full_pool_answers_429_and_recovers() -> None:
    # One running, one queued; slow simulated decoding keeps the first two busy.
    ingress = await started(llm_config(running=1, queued=1, sim={"time_scale": 0.2}))
    transport = httpx.ASGITransport(app=mount(ingress))
    body = {"model": MODEL, "prompt": "a b", "max_tokens": 40, "ignore_eos": True}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            busy = [asyncio.create_task(client.post("/v1/completions", json=body))]
            await asyncio.sleep(0.05)
            busy.append(asyncio.create_task(client.post("/v1/completions", json=body)))
            await asyncio.sleep(0.05)
            refused = await client.post("/v1/completions", json=body)
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            assert is_openai_error(refused.json())
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200]
            assert (await client.post("/v1/completions", json=body)).status_code == 200
    finally:
        await ingress.__del__()


def test_deployment_options_are_the_engines_without_routing_or_serve_queue() -> None:
    config = llm_config(running=8, queued=24)
    options = EngineIngress.get_deployment_options(config)
    assert "request_router_config" not in options and "max_queued_requests" not in options
    assert options["max_ongoing_requests"] > 8 + 24  # the pool's 429 comes first
    assert options["ray_actor_options"]["num_cpus"] == 0  # as the sim server's own
    assert pool_limits(config) == (8, 24)


def test_no_queue_limit_means_any_number_may_wait() -> None:
    config = llm_config()
    config.deployment_config["max_queued_requests"] = -1
    assert pool_limits(config)[1] == 2**31 - 1
    # Serve's replica limit is an int32: it must still deploy.
    options = EngineIngress.get_deployment_options(config)
    DeploymentConfig(max_ongoing_requests=options["max_ongoing_requests"]).to_proto()


def test_a_real_engine_keeps_its_placement_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # LLMServer's options read the driver's runtime env, which needs a connected Ray.
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(runtime_env={}))
    config = llm_config()
    config.server_cls = None
    options = EngineIngress.get_deployment_options(config)
    assert options["placement_group_bundles"]  # from RayFleetLLMServer, the default
    assert (
        RayFleetLLMServer.get_deployment_options(config)["placement_group_bundles"]
        == (options["placement_group_bundles"])
    )


async def test_a_clients_multiplexed_model_header_is_not_a_lora_request(api: Any) -> None:
    # Serve copies the serve_multiplexed_model_id header into the request context; the
    # engine server would take it for a LoRA adapter (and fail: none is configured).
    from ray.serve.context import _RequestContext, _serve_request_context

    _, client = api
    _serve_request_context.set(_RequestContext(multiplexed_model_id="adapter-x"))
    body = {"model": MODEL, "prompt": "a b", "max_tokens": 2}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text


async def test_a_whole_answer_gives_its_turn_back_at_once(api: Any) -> None:
    ingress, client = api
    body = {"model": MODEL, "prompt": "a b", "max_tokens": 2}
    for _ in range(3):
        assert (await client.post("/v1/completions", json=body)).status_code == 200
        assert not ingress._admission._turns.locked() and ingress._admission.waiting == 0
    missing = await client.post("/v1/completions", json={**body, "model": "nope"})
    assert missing.status_code == 404 and not ingress._admission._turns.locked()
