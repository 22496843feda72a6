"""Overload, replica death, streams and ingress error metrics, on the real ingress
logic with a fake engine handle (no Ray)."""

from __future__ import annotations

import asyncio
import json

import pytest
from deployments_fakes import FakeEngine, ingress_client, is_openai_error, sse
from ray.exceptions import ActorDiedError, RayTaskError
from ray.llm._internal.serve.core.configs.openai_api_models import ErrorResponse
from ray.serve.exceptions import BackPressureError

from rayfleet.deployments.metrics import INGRESS_METRICS
from rayfleet.deployments.overload import Admission, Overloaded, as_backpressure, replica_gone

BODY = {"model": "m", "prompt": "hello", "max_tokens": 4}
STREAM = {**BODY, "stream": True}


def backpressure(retry_after_s: float | None = None) -> BackPressureError:
    return BackPressureError(
        num_queued_requests=8, max_queued_requests=8, retry_after_s=retry_after_s
    )


def events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


def test_full_pool_is_a_429_with_retry_after() -> None:
    before = INGRESS_METRICS.errors[("overloaded", 429)]
    response = ingress_client(FakeEngine(backpressure())).post("/v1/completions", json=BODY)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert is_openai_error(response.json())
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert INGRESS_METRICS.errors[("overloaded", 429)] == before + 1


def test_retry_after_follows_serve_backpressure_config() -> None:
    response = ingress_client(FakeEngine(backpressure(2.2))).post("/v1/completions", json=STREAM)
    assert response.status_code == 429 and response.headers["retry-after"] == "3"


def test_backpressure_wrapped_by_ray_is_recognised() -> None:
    wrapped = RayTaskError("completions", "tb", backpressure())
    assert as_backpressure(wrapped) is not None
    response = ingress_client(FakeEngine(wrapped)).post("/v1/completions", json=BODY)
    assert response.status_code == 429


def test_request_is_resent_when_its_replica_dies_before_answering() -> None:
    engine = FakeEngine(ActorDiedError(), "ok")
    before = INGRESS_METRICS.retries["replica_died"]
    response = ingress_client(engine).post("/v1/completions", json=BODY)
    assert response.status_code == 200 and response.json()["choices"][0]["text"] == "hi"
    assert engine.calls == 2
    assert INGRESS_METRICS.retries["replica_died"] == before + 1


def test_repeated_replica_deaths_end_in_a_503() -> None:
    engine = FakeEngine(ActorDiedError())
    response = ingress_client(engine).post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 503 and is_openai_error(response.json())
    assert engine.calls == 3


def test_other_engine_errors_are_not_retried() -> None:
    engine = FakeEngine(RuntimeError("boom"), "ok")
    response = ingress_client(engine).post("/v1/completions", json=BODY)
    assert response.status_code == 500 and is_openai_error(response.json())
    assert engine.calls == 1


def test_stream_whose_replica_dies_midway_ends_with_an_error_event() -> None:
    engine = FakeEngine([sse("a"), sse("b"), ActorDiedError()])
    response = ingress_client(engine).post("/v1/completions", json=STREAM)
    assert response.status_code == 200
    sent = events(response.text)
    assert sent[-1] == "[DONE]"
    error = json.loads(sent[-2])
    assert is_openai_error(error) and "replica" in error["error"]["message"]
    assert engine.calls == 1  # text already reached the client: no re-send


def test_replica_gone_sees_through_ray_wrapping() -> None:
    assert replica_gone(RayTaskError("chat", "tb", ActorDiedError()))
    assert not replica_gone(RuntimeError("x"))


def test_request_timeout_is_a_408(monkeypatch) -> None:
    import asyncio

    async def slow(*_):
        await asyncio.sleep(5)
        yield "never"

    engine = FakeEngine()
    monkeypatch.setattr(engine, "_run", lambda method, body: slow())
    response = ingress_client(engine, timeout_s=0.2).post("/v1/completions", json=BODY)
    assert response.status_code == 408 and is_openai_error(response.json())


def test_timeout_is_a_408_when_the_engine_answers_the_cancellation(monkeypatch) -> None:
    # vLLM's OpenAI layer, called in-process, catches the cancellation and returns
    # {"error": "Client disconnected"} (a 400) instead of raising it.
    async def answers_cancellation(*_):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            error = {"message": "Client disconnected", "type": "BadRequestError", "code": 400}
            yield ErrorResponse(error=error)

    engine = FakeEngine()
    monkeypatch.setattr(engine, "_run", lambda method, body: answers_cancellation())
    response = ingress_client(engine, timeout_s=0.2).post("/v1/completions", json=BODY)
    assert response.status_code == 408 and is_openai_error(response.json())


def test_errors_are_counted_by_kind_and_status() -> None:
    client = ingress_client(FakeEngine(), token=b"k")
    before = INGRESS_METRICS.errors[("unauthorized", 401)]
    assert client.get("/health").status_code == 401
    assert client.get("/v1/models").status_code == 401
    assert INGRESS_METRICS.errors[("unauthorized", 401)] == before + 2
    bad_json = INGRESS_METRICS.errors[("invalid_json", 400)]
    headers = {"Authorization": "Bearer k"}
    assert client.post("/v1/completions", content=b"{", headers=headers).status_code == 400
    assert INGRESS_METRICS.errors[("invalid_json", 400)] == bad_json + 1
    assert client.get("/health", headers=headers).status_code == 200


def test_token_from_the_spec_env_var_guards_every_route(monkeypatch) -> None:
    monkeypatch.setenv("RAYFLEET_UNIT_KEY", "from-env")
    client = ingress_client(FakeEngine(), api_key_env="RAYFLEET_UNIT_KEY")
    for path in ("/health", "/v1/models"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert client.post("/v1/completions", json=BODY).status_code == 401
    ok = client.post("/v1/completions", json=BODY, headers={"Authorization": "Bearer from-env"})
    assert ok.status_code == 200
    ingress_client(FakeEngine())  # an ingress without auth clears the token again


async def test_admission_runs_queues_then_refuses() -> None:
    admission = Admission(running=1, queued=1)
    release = asyncio.Event()
    order: list[str] = []

    async def request(name: str) -> None:
        async with admission.turn():
            order.append(name)
            await release.wait()

    first = asyncio.create_task(request("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(request("second"))
    await asyncio.sleep(0)
    assert order == ["first"] and admission.waiting == 1
    with pytest.raises(Overloaded) as refused:
        async with admission.turn():
            pass
    assert refused.value.retry_after_s == 1
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and admission.waiting == 0
    async with admission.turn():  # every turn was given back
        pass


async def test_admission_gives_the_turn_back_when_the_request_fails() -> None:
    admission = Admission(running=1, queued=0)
    with pytest.raises(RuntimeError):
        async with admission.turn():
            raise RuntimeError("engine error")
    async with admission.turn():
        pass


def test_admission_rejects_impossible_limits() -> None:
    with pytest.raises(ValueError, match="running >= 1"):
        Admission(running=0, queued=1)
