"""OpenAI-style error bodies for every failure the ingress answers.

The OpenAI SDK reads ``{"error": {"message", "type", "param", "code"}}``; FastAPI's
default ``{"detail": ...}`` is invisible to it, so every handler goes through here.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from rayfleet.deployments.metrics import INGRESS_METRICS
from rayfleet.deployments.overload import EngineUnavailable, Overloaded

M = TypeVar("M", bound=BaseModel)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    error_type = ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    kind: str | None = None,
) -> JSONResponse:
    """An OpenAI error response, counted in ``rayfleet_ingress_errors_total``."""
    INGRESS_METRICS.record_error(status, kind)
    return JSONResponse(
        error_body(status, message, param=param, code=code), status_code=status, headers=headers
    )


class ClientError(Exception):
    """A request the client must fix; answered with a 4xx."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def sse_error_event(status: int, message: str, kind: str | None = None) -> str:
    """A stream's last event when it fails after it started: clients see why it ended."""
    INGRESS_METRICS.record_error(status, kind)
    return f"data: {json.dumps(error_body(status, message))}\n\n"


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    # Union branches show up as type names in the location; they mean nothing to users.
    parts = [p for p in parts if not p.startswith(("function-", "tagged-union", "list[", "dict["))]
    return ".".join(parts) or None


def _validation_message(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "Request body is not valid JSON"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    param = _loc_to_param(tuple(error.get("loc", ())))
    return f"{param}: {message}" if param else message


def _validation_error(errors: list[Any]) -> ClientError:
    first = errors[0] if errors else {}
    message = "; ".join(_validation_message(e) for e in errors[:5]) or "Invalid request"
    param = (
        None if first.get("type") == "json_invalid" else _loc_to_param(tuple(first.get("loc", ())))
    )
    return ClientError(400, message, param=param, code="invalid_value")


def _reject_constant(name: str) -> float:
    # Python's parser accepts NaN and Infinity; JSON does not, and the engine can't use them.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body; any failure here is the client's, so a 400.

    vLLM's request models run validators that raise TypeError or their own
    exception types on malformed input; FastAPI would turn those into 500s.
    """
    raw = await request.body()
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than Python's parser allows.
        raise ClientError(400, "Request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ClientError(400, "Request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _validation_error(list(error.errors())) from None
    except Exception as error:
        raise ClientError(400, f"Invalid request: {error}", code="invalid_value") from None


CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# Roles whose message is meaningless without content (assistant may carry tool calls).
ROLES_NEEDING_CONTENT = {"system", "developer", "user"}


def check_messages(messages: list[Any]) -> None:
    """OpenAI's rules that vLLM's chat model leaves to the template: known roles, content."""
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise ClientError(
                400,
                f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}, got {role!r}",
                param=f"messages.{index}.role",
                code="invalid_value",
            )
        if role in ROLES_NEEDING_CONTENT and message.get("content") is None:
            raise ClientError(
                400,
                f"messages[{index}] ({role}) needs content",
                param=f"messages.{index}.content",
                code="invalid_value",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            # Content parts are validated lazily, when first iterated: do it here,
            # where a bad part is still the client's error.
            try:
                message["content"] = list(content)
            except (TypeError, ValueError) as error:
                raise ClientError(
                    400,
                    f"messages[{index}].content must be a string or a list of valid "
                    f"content parts: {str(error).splitlines()[-1].strip()}",
                    param=f"messages.{index}.content",
                    code="invalid_value",
                ) from None


async def _on_client_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClientError)
    return error_response(exc.status, exc.message, param=exc.param, code=exc.code, kind=exc.code)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await _on_client_error(request, _validation_error(list(exc.errors())))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


async def _on_openai_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIHTTPException)
    status = exc.status_code if 400 <= exc.status_code < 600 else 500
    return error_response(status, exc.message, code=exc.type)


async def _on_overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    return error_response(
        429, exc.message, code="overloaded", headers={"Retry-After": str(exc.retry_after_s)}
    )


async def _on_engine_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineUnavailable)
    return error_response(503, exc.message, code="engine_unavailable", headers={"Retry-After": "1"})


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, f"Internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientError, _on_client_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(OpenAIHTTPException, _on_openai_error)
    app.add_exception_handler(Overloaded, _on_overloaded)
    app.add_exception_handler(EngineUnavailable, _on_engine_unavailable)
    app.add_exception_handler(Exception, _on_unexpected_error)
