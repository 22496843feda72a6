"""End to end: the spec's http.request_timeout_s bounds each request (tiny timeout spec)."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.e2e
OPS_SPEC = """
name: rayfleet
models:
  - id: tiny-llama
    source: rayfleet:tiny
    max_model_len: 2048
    pools:
      unified:
        accelerator: {kind: cpu, cpus: 1, kv_cache_gib: 1}
        replicas: 1
http: {host: 127.0.0.1, port: 8000, metrics_port: 8080, request_timeout_s: 2}
"""
# Long enough to outlast a 2 s timeout on the tiny model (about 4x).
LONG = {"model": "tiny-llama", "prompt": "tick", "max_tokens": 1900, "ignore_eos": True}


def test_non_streamed_request_past_the_timeout_is_a_408(ops_served: str) -> None:
    response = httpx.post(f"{ops_served}/v1/completions", json=LONG, timeout=30)
    assert response.status_code == 408, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "timed out" in error["message"]


def test_stream_past_the_timeout_ends_with_an_error_event(ops_served: str) -> None:
    with httpx.stream(
        "POST", f"{ops_served}/v1/completions", json={**LONG, "stream": True}, timeout=30
    ) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] is None and "timed out" in error["message"]


def test_short_requests_still_succeed(ops_served: str) -> None:
    short = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 4}
    response = httpx.post(f"{ops_served}/v1/completions", json=short, timeout=30)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 4
