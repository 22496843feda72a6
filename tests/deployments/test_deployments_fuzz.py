"""Fuzz: malformed requests against the real ingress logic (fake engine, no Ray).

Every answer must be < 500 and every 4xx must carry an OpenAI error body.
"""

from __future__ import annotations

import pytest
from deployments_fakes import (
    CHAT_BODIES,
    COMPLETION_BODIES,
    FakeEngine,
    ingress_client,
    is_openai_error,
)
from hypothesis import HealthCheck, given, settings

CASES_PER_ENDPOINT = 250
CLIENT = ingress_client(FakeEngine())


def check(path: str, body: bytes) -> None:
    response = CLIENT.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body[:120], response.text[:300])
    if response.status_code >= 400:
        assert is_openai_error(response.json()), response.text[:300]


FUZZ = settings(
    max_examples=CASES_PER_ENDPOINT,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(body=COMPLETION_BODIES)
def test_fuzz_completions(body: bytes) -> None:
    check("/v1/completions", body)


@FUZZ
@given(body=CHAT_BODIES)
def test_fuzz_chat(body: bytes) -> None:
    check("/v1/chat/completions", body)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
        b'{"model": "m", "prompt": "x", "max_tokens": 1e999}',
        b'{"model": "m", "prompt": "x", "temperature": NaN}',
        b'{"model": "m", "prompt": "x", "temperature": Infinity}',
    ],
)
def test_pathological_json_is_a_400(body: bytes) -> None:
    response = CLIENT.post("/v1/completions", content=body)
    assert 400 <= response.status_code < 500, response.text[:200]
    assert is_openai_error(response.json())


def test_still_serving_after_fuzz() -> None:
    response = CLIENT.post("/v1/completions", json={"model": "m", "prompt": "ok"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "hi"


def test_a_content_part_without_its_text_is_a_400() -> None:
    """Found by the chat fuzz: content parts are validated only when first iterated."""
    body = (
        b'{"model": "m", "max_tokens": 2,'
        b' "messages": [{"role": "user", "content": [{"type": "text"}]}]}'
    )
    response = CLIENT.post("/v1/chat/completions", content=body)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["param"] == "messages.0.content"
