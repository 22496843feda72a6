"""Reading the prompt, budget and session out of Serve requests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rayfleet.router.prompt import header_value, messages_text, prompt_input

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]},
]


def test_completion_prompt_and_budget() -> None:
    found = prompt_input([{"prompt": "hello", "max_tokens": 7}])
    assert found is not None
    assert (found.text, found.max_tokens, found.messages) == ("hello", 7, None)


def test_batched_and_token_prompts() -> None:
    batched = prompt_input([SimpleNamespace(prompt=["first", "second"])])
    assert batched is not None and batched.text == "first"
    tokens = prompt_input([{"prompt": [1, 2, 3]}])
    assert tokens is not None and (tokens.text, tokens.token_ids) == ("", (1, 2, 3))


def test_chat_messages_keep_roles_and_text_parts() -> None:
    found = prompt_input([SimpleNamespace(messages=CHAT, max_completion_tokens=9)])
    assert found is not None
    assert found.text == "<|system|>Be brief.\n<|user|>Hi\n"
    assert found.messages == tuple(CHAT)
    assert found.max_tokens == 9
    assert messages_text(CHAT) != messages_text([{"role": "user", "content": "Be brief.Hi"}])


def test_forwarded_token_ids_are_used() -> None:
    found = prompt_input([{"messages": CHAT}], {"request_token_ids": [5, 6]})
    assert found is not None and found.token_ids == (5, 6)


def test_no_prompt_means_none() -> None:
    assert prompt_input([]) is None
    assert prompt_input([{"model": "m"}]) is None


def test_session_from_metadata_then_headers() -> None:
    body = {"prompt": "p", "user": "alice"}
    raw_request = SimpleNamespace(headers={"X_Session_Id": "from-header"})
    header = {"session_source": "header", "session_header": "x-session-id"}
    from_header = prompt_input([body, raw_request], **header)
    assert from_header is not None and from_header.session == "from-header"
    with_meta = prompt_input([body, raw_request], metadata_session="from-meta", **header)
    assert with_meta is not None and with_meta.session == "from-meta"
    user = prompt_input([body, raw_request], session_source="user")
    assert user is not None and user.session == "alice"
    off = prompt_input([body, raw_request], metadata_session="from-meta")
    assert off is not None and off.session is None


def test_header_lookup_is_case_and_separator_insensitive() -> None:
    assert header_value({"X-SESSION-ID": "a"}, "x_session_id") == "a"
    assert header_value(None, "x") is None


def test_real_serve_llm_request_classes() -> None:
    models = pytest.importorskip("ray.serve.llm.openai_api_models")
    chat = models.ChatCompletionRequest(model="m", messages=CHAT, user="bob", max_tokens=5)
    found = prompt_input([chat], session_source="user")
    assert found is not None
    assert (found.text, found.session, found.max_tokens) == (messages_text(CHAT), "bob", 5)
    completion = models.CompletionRequest(model="m", prompt="hello there", max_tokens=3)
    found = prompt_input([completion, SimpleNamespace(headers={})])
    assert found is not None and (found.text, found.max_tokens) == ("hello there", 3)
