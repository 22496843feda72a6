"""The ingress's request parsing and error bodies, on a bare FastAPI app (no Ray)."""

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
)

from rayfleet.deployments.auth import AuthConfigError, load_token, require_api_key
from rayfleet.deployments.errors import install_error_handlers, parse_body


def make_app(token: bytes | None = None) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.api_token = token

    @app.post("/v1/completions", dependencies=[Depends(require_api_key)])
    async def completions(request: Request):
        body = await parse_body(request, CompletionRequest)
        return {"prompt": body.prompt}

    @app.post("/v1/chat/completions", dependencies=[Depends(require_api_key)])
    async def chat(request: Request):
        body = await parse_body(request, ChatCompletionRequest)
        return {"n": len(body.messages)}

    return TestClient(app, raise_server_exceptions=False)


def assert_openai_error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", b"{not json"),
        ("/v1/completions", b"[1, 2]"),
        ("/v1/completions", b"\xff\xfe"),
        ("/v1/completions", b'{"model": "m"}'),
        ("/v1/completions", b'{"model": "m", "prompt": "x", "max_tokens": "many"}'),
        ("/v1/chat/completions", b'{"model": "m", "messages": null}'),
        ("/v1/chat/completions", b'{"model": "m", "messages": "hi"}'),
        ("/v1/chat/completions", b'{"model": "m"}'),
        ("/v1/chat/completions", b'{"model": 5, "messages": []}'),
    ],
)
def test_malformed_bodies_get_400_with_openai_error(path, body):
    response = make_app().post(path, content=body, headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


def test_param_names_the_bad_field():
    response = make_app().post(
        "/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": "a"}
    )
    assert assert_openai_error(response, 400)["param"] == "max_tokens"


def test_valid_body_passes():
    response = make_app().post("/v1/completions", json={"model": "m", "prompt": "hello"})
    assert response.json() == {"prompt": "hello"}


def test_bearer_auth():
    client = make_app(token=b"s3cret")
    body = {"model": "m", "prompt": "x"}
    error = assert_openai_error(client.post("/v1/completions", json=body), 401)
    assert error["type"] == "authentication_error"
    bad = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer nope"})
    assert_openai_error(bad, 401)
    good = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 200


def test_token_must_exist_when_configured(monkeypatch):
    monkeypatch.delenv("RAYFLEET_TEST_KEY", raising=False)
    assert load_token(None) is None
    with pytest.raises(AuthConfigError, match="RAYFLEET_TEST_KEY"):
        load_token("RAYFLEET_TEST_KEY")
    monkeypatch.setenv("RAYFLEET_TEST_KEY", "abc")
    assert load_token("RAYFLEET_TEST_KEY") == b"abc"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "bogus", "content": "x"}], "messages.0.role"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], "messages.1.content"),
    ],
)
def test_chat_messages_need_known_roles_and_content(messages, param):
    from rayfleet.deployments.errors import ClientError, check_messages

    with pytest.raises(ClientError) as error:
        check_messages(messages)
    assert error.value.param == param


def test_tool_and_assistant_messages_may_omit_content():
    from rayfleet.deployments.errors import check_messages

    check_messages([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": []}])
