"""End to end: four simulated replicas behind RayFleet's ingress, deployed with serve.run.

Starts its own local Ray instance (``address="local"``) and serves HTTP on port 8765,
so it does not collide with the vLLM e2e tests' cluster on 8000.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from rayfleet.bench.sim.app import build_sim_app, sim_engine

pytestmark = pytest.mark.e2e
MODEL = "sim-model"
APP = "sim"
PORT = 8765
REPLICAS = 4
SIM = {"tokenizer": "words", "time_scale": 1.0, "num_kv_blocks": 256}


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    import ray
    from ray import serve

    ray.init(address="local", num_cpus=4, include_dashboard=False)
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": PORT})
        app = build_sim_app({"engines": [sim_engine(MODEL, REPLICAS, sim=SIM)]})
        serve.run(app, name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{PORT}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(served: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0)


def test_four_replicas_are_running(served: str) -> None:
    from ray import serve
    from ray.serve._private.common import ReplicaState

    deployments = serve.status().applications[APP].deployments
    engine = next(d for name, d in deployments.items() if name != "ingress")
    assert engine.replica_states.get(ReplicaState.RUNNING) == REPLICAS
    models = httpx.get(f"{served}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [MODEL]


def test_streamed_completion_over_http(served: str) -> None:
    body = {
        "model": MODEL,
        "prompt": "the router sends each request " * 50,
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads = []
    with httpx.stream("POST", f"{served}/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                payloads.append(line[len("data: ") :])
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert len(texts) == 12 and all(texts)
    assert chunks[-1]["usage"]["completion_tokens"] == 12


def test_streamed_chat_with_the_openai_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        stream=True,
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert deltas[0].role == "assistant"
    assert len([d for d in deltas if d.content]) == 6


def test_concurrent_requests_and_routing_stats(client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    def ask(i: int) -> int:
        result = client.completions.create(model=MODEL, prompt=f"request {i} " * 30, max_tokens=8)
        assert result.usage is not None
        return result.usage.completion_tokens

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(ask, range(32))) == [8] * 32
    handle = serve.get_deployment_handle(MODEL, app_name=APP)
    stats = handle.record_routing_stats.remote().result()
    assert {"num_running", "num_waiting", "kv_cache_usage", "reported_at"} <= stats.keys()


def test_unknown_model_and_too_long_prompts_are_client_errors(served: str) -> None:
    too_long = {"model": MODEL, "prompt": "x " * 5000, "max_tokens": 4}
    assert httpx.post(f"{served}/v1/completions", json=too_long, timeout=60).status_code == 400
    unknown = {"model": "nope", "prompt": "hi", "max_tokens": 4}
    status = httpx.post(f"{served}/v1/completions", json=unknown, timeout=60).status_code
    assert 400 <= status < 500
