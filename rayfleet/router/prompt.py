"""Read what routing needs out of an OpenAI-style request, by duck typing.

Works on vLLM's CompletionRequest/ChatCompletionRequest (what ray.serve.llm's ingress
passes as ``args[0]``), on the SimpleNamespace Serve LLM's direct-streaming router
passes, and on plain dicts. ``args[1]``, when present, is Serve LLM's RawRequestInfo
carrying the HTTP headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

SessionSource = Literal["off", "header", "user"]


@dataclass(frozen=True, slots=True)
class PromptInput:
    """The routing-relevant part of one request."""

    text: str
    messages: tuple[Any, ...] | None = None
    token_ids: tuple[int, ...] | None = None
    max_tokens: int | None = None
    session: str | None = None


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def find_body(args: Sequence[Any]) -> Any | None:
    """The first argument that looks like a completion or chat request."""
    for arg in args:
        if _field(arg, "messages") is not None or _field(arg, "prompt") is not None:
            return arg
    return None


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(_content_text(part) for part in content)
    text = _field(content, "text")
    if isinstance(text, str):
        return text
    return _content_text(_field(content, "content"))


def messages_text(messages: Sequence[Any]) -> str:
    """A stable string for a chat: roles matter to the template, so they are kept."""
    return "".join(
        f"<|{_field(message, 'role') or ''}|>{_content_text(_field(message, 'content'))}\n"
        for message in messages
    )


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, Sequence) and bool(value) and isinstance(value[0], int)


def _prompt_parts(prompt: Any) -> tuple[str, tuple[int, ...] | None]:
    """(text, token ids) of a completion prompt; batches are routed by their first prompt."""
    if isinstance(prompt, str):
        return prompt, None
    if _is_token_ids(prompt):
        return "", tuple(prompt)
    if isinstance(prompt, Sequence) and prompt:
        return _prompt_parts(prompt[0])
    return "", None


def _max_tokens(body: Any) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = _field(body, name)
        if isinstance(value, int) and value >= 0:
            return value
    return None


def header_value(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup that also tolerates ``-``/``_`` rewrites by proxies."""
    if not headers:
        return None
    wanted = name.lower().replace("_", "-")
    for key, value in headers.items():
        if key.lower().replace("_", "-") == wanted:
            return value
    return None


def session_key(
    body: Any,
    args: Sequence[Any],
    metadata_session: str | None,
    source: SessionSource,
    header: str,
) -> str | None:
    """The session a request belongs to, per the configured source."""
    if source == "user":
        user = _field(body, "user")
        return str(user) if user else None
    if source == "header":
        if metadata_session:
            return metadata_session
        for arg in args[1:]:
            value = header_value(_field(arg, "headers"), header)
            if value:
                return value
    return None


def prompt_input(
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    metadata_session: str | None = None,
    session_source: SessionSource = "off",
    session_header: str = "x-session-id",
) -> PromptInput | None:
    """Routing input of a Serve request, or None when no prompt can be found."""
    body = find_body(args)
    if body is None:
        return None
    messages = _field(body, "messages")
    if messages is not None:
        text, token_ids = messages_text(messages), None
    else:
        text, token_ids = _prompt_parts(_field(body, "prompt"))
    # Serve LLM's direct-streaming router may forward the prompt's token ids.
    forwarded: Any = (kwargs or {}).get("request_token_ids")
    if _is_token_ids(forwarded):
        token_ids = tuple(forwarded)
    return PromptInput(
        text=text,
        messages=tuple(messages) if messages is not None else None,
        token_ids=token_ids,
        max_tokens=_max_tokens(body),
        session=session_key(body, args, metadata_session, session_source, session_header),
    )
