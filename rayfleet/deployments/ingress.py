"""The OpenAI-compatible ingress: ray.serve.llm's OpenAiIngress, hardened.

What it changes: every error is an OpenAI-style body with a 4xx for client
mistakes, counted by kind in ``rayfleet_ingress_errors_total``; optional bearer
auth; ``/v1/models`` shows each model's local folder as ``root``; the spec's
request timeout; a full pool answers 429 with ``Retry-After``; a request whose
engine replica dies before answering is re-sent (see overload.py); a stream
that fails midway ends with an error event instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import Depends, FastAPI, Request
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    OpenAIHTTPException,
)
from ray.llm._internal.serve.core.ingress.ingress import OpenAiIngress, make_fastapi_ingress
from ray.llm._internal.serve.core.ingress.utils import (
    NON_STREAMING_RESPONSE_TYPES,
    _openai_json_wrapper,
    _peek_at_generator,
)
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from rayfleet.deployments.auth import load_token, require_api_key, set_ingress_token
from rayfleet.deployments.errors import (
    check_messages,
    install_error_handlers,
    parse_body,
    sse_error_event,
)
from rayfleet.deployments.overload import first_chunk_with_retry, replica_gone

_auth = [Depends(require_api_key)]

ENDPOINTS = {
    "models": lambda a: a.get("/v1/models", dependencies=_auth),
    "model_data": lambda a: a.get("/v1/models/{model:path}", dependencies=_auth),
    "completions": lambda a: a.post("/v1/completions", dependencies=_auth),
    "chat": lambda a: a.post("/v1/chat/completions", dependencies=_auth),
    "health": lambda a: a.get("/health", dependencies=_auth),
}


def _raise_for_error(chunk: Any) -> None:
    if isinstance(chunk, ErrorResponse):
        code = int(chunk.error.code or 500)
        raise OpenAIHTTPException(
            status_code=code, message=chunk.error.message, type=chunk.error.type
        )


async def _guarded_stream(chunks: AsyncGenerator[str, None]) -> AsyncGenerator[str, None]:
    try:
        async for chunk in chunks:
            yield chunk
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        yield sse_error_event(408, "Request timed out while streaming")
        yield "data: [DONE]\n\n"
    except Exception as error:
        if replica_gone(error):
            message = "The engine replica serving this stream failed; retry the request"
            yield sse_error_event(503, message, kind="replica_died")
        else:
            yield sse_error_event(500, f"Stream failed: {type(error).__name__}")
        yield "data: [DONE]\n\n"


async def _with_deadline(
    chunks: AsyncGenerator[Any, None], deadline: float
) -> AsyncGenerator[Any, None]:
    async with aclosing(chunks), asyncio.timeout_at(deadline) as timeout:
        async for chunk in chunks:
            if timeout.expired():
                # The engine answered the cancellation instead of raising it (vLLM's
                # OpenAI layer turns it into a "Client disconnected" error).
                raise TimeoutError
            yield chunk


def answer_before_proxy(request_timeout_s: float) -> float:
    """The ingress's own deadline: a little inside the HTTP proxy's (same spec field),
    so a timed-out client gets the ingress's OpenAI error, not the proxy's bare one."""
    return request_timeout_s - min(0.5, request_timeout_s * 0.05)


class RayFleetIngress(OpenAiIngress):
    def __init__(
        self,
        llm_deployments: dict[str, Any],
        model_cards: dict[str, Any],
        *,
        model_roots: dict[str, str | None],
        max_model_lens: dict[str, int],
        api_key_env: str | None = None,
        request_timeout_s: float = 600.0,
        lora_paths: dict[str, str] | None = None,
    ) -> None:
        super().__init__(llm_deployments, model_cards, lora_paths=lora_paths)
        self._model_roots = model_roots
        self._max_model_lens = max_model_lens
        self._timeout_s = answer_before_proxy(request_timeout_s)
        self._created = int(time.time())
        set_ingress_token(load_token(api_key_env))

    def _card(self, model_id: str) -> dict[str, Any]:
        return {
            "id": model_id,
            "object": "model",
            "created": self._created,
            "owned_by": "rayfleet",
            "root": self._model_roots.get(model_id) or model_id,
            "parent": None,
            "max_model_len": self._max_model_lens.get(model_id),
        }

    async def models(self) -> JSONResponse:  # type: ignore[override]
        return JSONResponse({"object": "list", "data": [self._card(m) for m in self._model_roots]})

    async def model_data(self, model: str) -> JSONResponse:  # type: ignore[override]
        if model not in self._model_roots:
            raise HTTPException(404, f"The model {model!r} does not exist")
        return JSONResponse(self._card(model))

    async def health(self) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _process_llm_request(
        self, body: Any, call_method: str, raw_request: Request | None = None
    ) -> Response:
        deadline = asyncio.get_running_loop().time() + self._timeout_s

        opened: list[AsyncGenerator[Any, None]] = []

        def start() -> AsyncGenerator[Any, None]:
            call = self._get_response(body=body, call_method=call_method, raw_request=raw_request)
            opened.append(_with_deadline(call, deadline))
            return opened[-1]

        try:
            first, chunks = await first_chunk_with_retry(start, _peek_at_generator)
        except TimeoutError:
            raise OpenAIHTTPException(408, "Request timed out", type="timeout") from None
        except StopAsyncIteration:
            raise OpenAIHTTPException(500, "The engine returned no response") from None
        first_chunk = first[0] if isinstance(first, list) and first else first
        if isinstance(first_chunk, (ErrorResponse, *NON_STREAMING_RESPONSE_TYPES)):
            # The whole answer is in: end the engine call now, not when collected.
            await opened[-1].aclose()
        _raise_for_error(first_chunk)
        if isinstance(first_chunk, NON_STREAMING_RESPONSE_TYPES):
            return JSONResponse(content=first_chunk.model_dump())
        return StreamingResponse(
            _guarded_stream(_openai_json_wrapper(chunks)), media_type="text/event-stream"
        )

    async def completions(self, request: Request) -> Response:  # type: ignore[override]
        body = await parse_body(request, CompletionRequest)
        return await self._process_llm_request(body, "completions", request)

    async def chat(self, request: Request) -> Response:  # type: ignore[override]
        body = await parse_body(request, ChatCompletionRequest)
        check_messages(body.messages)
        return await self._process_llm_request(body, "chat", request)


def serve_ingress(cls: type[RayFleetIngress]) -> type:
    """``cls`` as a Serve ingress class: the routes on a FastAPI app of its own."""
    app = FastAPI(title="RayFleet OpenAI-compatible API")
    install_error_handlers(app)
    return make_fastapi_ingress(cls, endpoint_map=ENDPOINTS, app=app)
