"""A fake engine handle, the real ingress on a plain FastAPI app (no Ray), and
hypothesis strategies for malformed OpenAI requests (shared with the e2e fuzz test).

The fake stands in for the engine deployment's handle only: the ingress's request
parsing, auth, error mapping, retries and stream handling are the real code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionResponse,
    CompletionResponse,
)

from rayfleet.deployments.auth import require_api_key
from rayfleet.deployments.errors import install_error_handlers
from rayfleet.deployments.ingress import RayFleetIngress

MODEL = "m"
USAGE = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


def completion(text: str = "hi") -> CompletionResponse:
    return CompletionResponse.model_validate(
        {
            "id": "cmpl-1",
            "model": MODEL,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": USAGE,
        }
    )


def chat_completion() -> ChatCompletionResponse:
    return ChatCompletionResponse.model_validate(
        {
            "id": "chat-1",
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "length",
                }
            ],
            "usage": USAGE,
        }
    )


def sse(text: str) -> str:
    return f"data: {json.dumps({'choices': [{'index': 0, 'text': text}]})}\n\n"


class FakeEngine:
    """Stands in for an engine deployment handle.

    ``script`` says what each successive call does: an exception is raised before
    any output; a list of strings is streamed (an exception inside it is raised
    after the strings before it); anything else answers with a whole response.
    """

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls = 0

    def options(self, **_: Any) -> FakeEngine:
        return self

    def __getattr__(self, method: str) -> Any:
        if method not in ("completions", "chat"):
            raise AttributeError(method)
        engine = self

        class _Method:
            def remote(self, body: Any, raw: Any) -> AsyncGenerator[Any, None]:
                return engine._run(method, body)

        return _Method()

    async def _run(self, method: str, body: Any) -> AsyncGenerator[Any, None]:
        step = self.script[min(self.calls, len(self.script) - 1)] if self.script else "ok"
        self.calls += 1
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, list):
            for item in step:
                if isinstance(item, BaseException):
                    raise item
                yield [item]
            return
        if getattr(body, "stream", False):
            yield [sse("hi"), "data: [DONE]\n\n"]
        else:
            yield completion() if method == "completions" else chat_completion()


def ingress_client(
    engine: FakeEngine,
    token: bytes | None = None,
    timeout_s: float = 600.0,
    api_key_env: str | None = None,
) -> TestClient:
    """The real RayFleetIngress's handlers on a bare FastAPI app, with the fake engine.

    Like Serve, which serves a pickled copy of the ingress's FastAPI app, this app is
    not the module's ``app``.
    """
    ingress = RayFleetIngress(
        {MODEL: engine},
        {MODEL: None},
        model_roots={MODEL: None},
        max_model_lens={MODEL: 2048},
        request_timeout_s=timeout_s,
        api_key_env=api_key_env,
    )
    return TestClient(mount(ingress, token), raise_server_exceptions=False)


def mount(ingress: RayFleetIngress, token: bytes | None = None) -> FastAPI:
    """The ingress's handlers on a bare FastAPI app, routed as Serve routes them."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.api_token = token
    auth = [Depends(require_api_key)]
    app.get("/v1/models", dependencies=auth)(ingress.models)
    app.get("/health", dependencies=auth)(ingress.health)
    app.post("/v1/completions", dependencies=auth)(ingress.completions)
    app.post("/v1/chat/completions", dependencies=auth)(ingress.chat)
    return app


# --- malformed requests --------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
# Arbitrary JSON, nested a few levels: lists and objects of anything.
any_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Values near the edges of what the fields accept.
edge_numbers = st.sampled_from(
    [-1, 0, 1, -0.5, 2.5, 3, 100, 2048, 2049, 10**6, 2**31, 2**63, -(2**63), 1e308, -1e308]
)
huge_text = st.integers(min_value=10_000, max_value=100_000).map(lambda n: "x " * (n // 2))
messages_part = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "x"]), any_json),
        "content": st.one_of(
            st.text(max_size=20),
            any_json,
            st.lists(
                st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "bad"])}),
                max_size=3,
            ),
        ),
        "name": any_json,
        "tool_calls": any_json,
    },
)

COMMON_FIELDS = [
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stop",
    "seed",
    "logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "stream_options",
    "response_format",
    "min_tokens",
    "ignore_eos",
    "stop_token_ids",
    "priority",
]
COMPLETION_FIELDS = [*COMMON_FIELDS, "prompt", "echo", "suffix"]
CHAT_FIELDS = [*COMMON_FIELDS, "messages", "tools", "tool_choice", "top_logprobs"]


def _field_value(field: str) -> st.SearchStrategy[Any]:
    if field == "messages":
        return st.one_of(any_json, st.lists(messages_part, max_size=3))
    if field == "prompt":
        return st.one_of(any_json, huge_text, st.lists(st.integers(-5, 2**40), max_size=5))
    return st.one_of(any_json, edge_numbers)


def _broken_body(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A body with at least one field set to something odd; others may be valid."""
    base = {"model": MODEL, "max_tokens": 2}
    return st.lists(st.sampled_from(fields), min_size=1, max_size=4, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({f: _field_value(f) for f in chosen}).map(
            lambda odd: {**base, **odd}
        )
    )


def _encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


raw_garbage = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"text"',
            b"NaN",
            b"\xff\xfe{\x00}\x00",
            '{"model": "m", "prompt": "é"}'.encode("utf-16"),
            '{"model": "m", "prompt": "é"}'.encode("latin-1"),
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
        ]
    ),
)


def malformed_requests(fields: list[str]) -> st.SearchStrategy[bytes]:
    """Request bodies that are wrong in type, range, nesting, encoding or size."""
    return st.one_of(
        _broken_body(fields).map(_encode),
        raw_garbage,
        any_json.map(_encode),
    )


COMPLETION_BODIES = malformed_requests(COMPLETION_FIELDS)
CHAT_BODIES = malformed_requests(CHAT_FIELDS)


def is_openai_error(payload: Any) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    return (
        isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and bool(error["message"])
    )
