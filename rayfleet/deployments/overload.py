"""Shedding load and surviving engine replicas that die.

Admission: the ingress is the caller of every engine deployment's handle, so the
pool's ``max_queued_requests`` (from the spec) is the ingress-side admission
limit: past ``replicas × max_ongoing_requests`` running plus ``max_queued_requests``
waiting, Ray Serve's handle raises ``BackPressureError`` at once. Here that
becomes a 429 with ``Retry-After`` and an OpenAI error body, instead of Ray's
plain-text 503.

When the engine runs inside the ingress replica (a pool of one replica, see
engine_ingress.py) there is no handle in between; ``Admission`` applies the same
limits in-process.

Replica death: until the first chunk has reached the client nothing was sent,
and generating again has no side effect, so the request is re-sent (Ray Serve
routes it to a live replica). After that, the stream ends with an error event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from rayfleet.deployments.metrics import INGRESS_METRICS

DEFAULT_RETRY_AFTER_S = 1
# One original attempt plus retries; each retry goes to whichever replica is alive.
MAX_ATTEMPTS = 3
RETRY_PAUSE_S = 0.1
REPLICA_GONE = (RayActorError, ActorUnavailableError)


class Overloaded(Exception):
    """The pool is full; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


def _pool_full(retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> Overloaded:
    message = "The server is at capacity for this model; retry after the Retry-After delay"
    return Overloaded(message, retry_after_s)


class Admission:
    """At most ``running`` requests at the engine and ``queued`` waiting for a turn;
    past that, ``Overloaded`` at once (Serve's handle limits, applied in-process)."""

    def __init__(self, running: int, queued: int) -> None:
        if running < 1 or queued < 0:
            raise ValueError(f"admission needs running >= 1, queued >= 0; got {running}, {queued}")
        self._turns = asyncio.Semaphore(running)
        self._queued = queued
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._turns.locked() and self._waiting >= self._queued:
            raise _pool_full()
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._turns.release()


class EngineUnavailable(Exception):
    """No engine replica could take the request (all retries failed, or none is up)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (Ray wraps remote errors in RayTaskError)."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        nested = current.cause if isinstance(current, RayTaskError) else None
        current = nested or current.__cause__
    return seen


def as_backpressure(error: BaseException) -> BackPressureError | None:
    for cause in _causes(error):
        if isinstance(cause, BackPressureError):
            return cause
    return None


def replica_gone(error: BaseException) -> bool:
    """The engine replica died or became unreachable while handling the request."""
    return any(isinstance(c, REPLICA_GONE) for c in _causes(error))


def to_overloaded(error: BackPressureError) -> Overloaded:
    retry_after = error.retry_after_s
    seconds = DEFAULT_RETRY_AFTER_S if retry_after is None else max(1, int(retry_after + 0.999))
    return _pool_full(seconds)


Peek = tuple[Any, AsyncGenerator[Any, None]]


async def first_chunk_with_retry(
    start: Callable[[], AsyncGenerator[Any, None]],
    peek: Callable[[AsyncGenerator[Any, None]], Any],
    attempts: int = MAX_ATTEMPTS,
) -> Peek:
    """Start the engine call and wait for its first chunk, re-sending on replica death.

    Safe to repeat because nothing has reached the client before the first chunk.
    """
    for attempt in range(1, attempts + 1):
        try:
            result: Peek = await peek(start())
            return result
        except BackPressureError as error:
            raise to_overloaded(error) from None
        except DeploymentUnavailableError:
            raise EngineUnavailable("No engine replica is available for this model") from None
        except Exception as error:
            backpressure = as_backpressure(error)
            if backpressure is not None:
                raise to_overloaded(backpressure) from None
            if not replica_gone(error):
                raise
            if attempt == attempts:
                raise EngineUnavailable(
                    f"The engine replica failed {attempts} times in a row; retry shortly"
                ) from None
            INGRESS_METRICS.record_retry("replica_died")
            # Give Serve a moment to drop the dead replica from its routing set.
            await asyncio.sleep(RETRY_PAUSE_S * attempt)
    raise AssertionError("unreachable")
