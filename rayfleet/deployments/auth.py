"""Optional bearer-token auth for the ingress.

The token is read from the environment of the ingress replica (set from a
Kubernetes secret or the user's shell), never from the rendered config, and is
compared in constant time.
"""

from __future__ import annotations

import hmac
import os

from fastapi import Request
from starlette.exceptions import HTTPException


class AuthConfigError(RuntimeError):
    """Auth is configured but the token is not available to the replica."""


def load_token(api_key_env: str | None) -> bytes | None:
    if not api_key_env:
        return None
    value = os.environ.get(api_key_env, "")
    if not value:
        raise AuthConfigError(
            f"auth.api_key_env is {api_key_env!r} but that environment variable is "
            "unset or empty where the ingress runs"
        )
    return value.encode()


def check_bearer(expected: bytes | None, authorization: str | None) -> None:
    """Raise 401 unless ``authorization`` carries the expected bearer token."""
    if expected is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise HTTPException(
            401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )


class _IngressToken:
    """The token of the ingress running in this process.

    Serve serves a pickled copy of the FastAPI app, so the ingress can't reach the
    served app's ``state`` from its constructor; this module is imported (not
    copied) in the replica, so the dependency below sees what the constructor set.
    """

    value: bytes | None = None


def set_ingress_token(token: bytes | None) -> None:
    _IngressToken.value = token


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: the app's own ``state.api_token`` if set, else the ingress's."""
    expected = getattr(request.app.state, "api_token", None) or _IngressToken.value
    check_bearer(expected, request.headers.get("authorization"))
