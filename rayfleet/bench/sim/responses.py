"""OpenAI-shaped answers, built the way vLLM's OpenAI server builds them.

Streams are ``data: {json}\\n\\n`` strings ending with ``data: [DONE]\\n\\n`` (chat
streams open with a role-only delta, sent with the first token); non-streaming answers
are Ray Serve LLM's response objects, so its ingress handles both unchanged. Usage
carries ``prompt_tokens_details.cached_tokens`` (vLLM's ``--enable-prompt-tokens-details``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionResponse,
    CompletionStreamResponse,
    ErrorInfo,
    ErrorResponse,
)

from rayfleet.bench.sim.engine import SimRequest, TokenEvent

KvTransfer = Callable[[SimRequest], dict[str, Any] | None]

DONE = "data: [DONE]\n\n"


@dataclass
class Answer:
    """What is known about one answer while it streams."""

    id: str
    model: str
    chat: bool
    prompt_tokens: int
    created: int = field(default_factory=lambda: int(time.time()))
    cached_tokens: int = 0
    completion_tokens: int = 0
    kv_transfer_params: dict[str, Any] | None = None

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def error_response(message: str, code: int = 400) -> ErrorResponse:
    kind = "BadRequestError" if code < 500 else "InternalServerError"
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, code=code))


def _sse(payload: Any, **dump: Any) -> str:
    return f"data: {payload.model_dump_json(**dump)}\n\n"


def token_chunk(answer: Answer, text: str, finish_reason: str | None) -> str:
    if answer.chat:
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish_reason}
        return _sse(_chat_chunk(answer, choice), exclude_unset=True)
    choice = {"index": 0, "text": text, "finish_reason": finish_reason}
    return _sse(_completion_chunk(answer, [choice]), exclude_unset=True)


def role_chunk(answer: Answer) -> str:
    choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    return _sse(_chat_chunk(answer, choice), exclude_unset=True)


def usage_chunk(answer: Answer) -> str:
    cls = ChatCompletionStreamResponse if answer.chat else CompletionStreamResponse
    chunk = cls(
        id=answer.id,
        created=answer.created,
        model=answer.model,
        choices=[],
        usage=answer.usage(),
    )
    return _sse(chunk, exclude_unset=False, exclude_none=True)


def _chat_chunk(answer: Answer, choice: dict[str, Any]) -> ChatCompletionStreamResponse:
    return ChatCompletionStreamResponse(
        id=answer.id,
        object="chat.completion.chunk",
        created=answer.created,
        model=answer.model,
        choices=[choice],
    )


def _completion_chunk(answer: Answer, choices: list[dict[str, Any]]) -> CompletionStreamResponse:
    return CompletionStreamResponse(
        id=answer.id,
        object="text_completion",
        created=answer.created,
        model=answer.model,
        choices=choices,
    )


async def stream_answer(
    answer: Answer,
    events: AsyncIterator[TokenEvent],
    text_of: Callable[[int], str],
    include_usage: bool,
) -> AsyncIterator[str]:
    """SSE strings of one streamed answer, like vLLM's."""
    async for event in events:
        if answer.completion_tokens == 0:
            answer.cached_tokens = event.request.num_cached_tokens
            if answer.chat:
                yield role_chunk(answer)
        answer.completion_tokens += 1
        finish = "length" if event.finished else None
        yield token_chunk(answer, text_of(event.token_id), finish)
    if include_usage:
        yield usage_chunk(answer)
    yield DONE


async def whole_answer(
    answer: Answer,
    events: AsyncIterator[TokenEvent],
    text_of: Callable[[int], str],
    kv_transfer: KvTransfer | None = None,
) -> CompletionResponse | ChatCompletionResponse:
    """The non-streaming response object of one answer."""
    texts = []
    async for event in events:
        answer.cached_tokens = event.request.num_cached_tokens
        texts.append(text_of(event.token_id))
        if event.finished and kv_transfer is not None:
            answer.kv_transfer_params = kv_transfer(event.request)
    answer.completion_tokens = len(texts)
    text = "".join(texts)
    if answer.chat:
        return ChatCompletionResponse(
            id=answer.id,
            created=answer.created,
            model=answer.model,
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length",
                }
            ],
            usage=answer.usage(),
            kv_transfer_params=answer.kv_transfer_params,
        )
    return CompletionResponse(
        id=answer.id,
        created=answer.created,
        model=answer.model,
        choices=[{"index": 0, "text": text, "finish_reason": "length"}],
        usage=answer.usage(),
        kv_transfer_params=answer.kv_transfer_params,
    )
