"""The ingress with its model's engine in the same replica.

A model served by one engine replica has nothing to route, so the Serve hop from
the ingress to the engine only costs time (~3.6 ms of TTFT on a 2-core host, see
docs/benchmarks.md). The plan chooses this layout for such specs
(``Plan.engine_in_ingress``); the replica then runs RayFleet's ingress (same
routes, errors, auth and timeouts) and the engine server, called in-process.

What the Serve handle did between the two is done here: the pool's
``max_ongoing_requests``/``max_queued_requests`` admission (``Admission``), and the
engine's health is the replica's health. Streams are not batched: batching saves
Ray messages, and there are none here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from ray.llm._internal.serve.constants import DEFAULT_MAX_ONGOING_REQUESTS
from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest
from ray.llm._internal.serve.core.ingress.utils import _sanitize_chat_completion_request
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.serve import context as serve_context
from ray.serve.llm import LLMConfig
from starlette.requests import Request

from rayfleet.deployments.ingress import RayFleetIngress
from rayfleet.deployments.overload import Admission
from rayfleet.deployments.server import RayFleetLLMServer

# Serve's own limit on the replica sits above the pool's, so the pool's 429 answers
# first and /v1/models or /health still get through when the pool is full.
CONTROL_HEADROOM = 16
# Serve keeps max_ongoing_requests as an int32; it also stands for "no queue limit".
SERVE_INT_MAX = 2**31 - 1


def _server_cls(llm_config: LLMConfig) -> Any:
    return llm_config.server_cls or RayFleetLLMServer


def pool_limits(llm_config: LLMConfig) -> tuple[int, int]:
    """(running, queued) the pool's deployment config allows one replica."""
    config = llm_config.deployment_config
    running = int(config.get("max_ongoing_requests", DEFAULT_MAX_ONGOING_REQUESTS))
    queued = config.get("max_queued_requests", -1)
    # Serve's -1 means no queue limit: any number may wait.
    return running, (SERVE_INT_MAX if queued is None or queued < 0 else int(queued))


class EngineIngress(RayFleetIngress):
    async def __init__(  # type: ignore[misc]
        self, llm_config: LLMConfig, *, model_card: Any, **ingress_options: Any
    ) -> None:
        model_id = llm_config.model_id
        super().__init__({model_id: None}, {model_id: model_card}, **ingress_options)
        self._admission = Admission(*pool_limits(llm_config))
        cls = _server_cls(llm_config)
        unbatched = llm_config.model_copy(deep=True)
        unbatched.experimental_configs["stream_batching_interval_ms"] = 0
        # Built the way Serve builds a deployment with an async constructor; kept
        # before it starts, so __del__ shuts down an engine that failed to start.
        self._engine = cls.__new__(cls)
        await self._engine.__init__(unbatched)

    @classmethod
    def get_deployment_options(cls, llm_config: LLMConfig) -> dict[str, Any]:  # type: ignore[override]
        """The engine server's options (placement, runtime env, replicas), minus what
        only matters between an ingress and a pool of several replicas."""
        options: dict[str, Any] = _server_cls(llm_config).get_deployment_options(llm_config)
        options.pop("request_router_config", None)
        options.pop("max_queued_requests", None)
        running, queued = pool_limits(llm_config)
        options["max_ongoing_requests"] = min(running + queued + CONTROL_HEADROOM, SERVE_INT_MAX)
        return options

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def _get_response(
        self, *, body: Any, call_method: str, raw_request: Request | None = None
    ) -> AsyncGenerator[Any, None]:
        await self._get_model_id(body.model)
        if isinstance(body, ChatCompletionRequest):
            body = _sanitize_chat_completion_request(body)
        info = RawRequestInfo.from_starlette_request(raw_request) if raw_request else None
        _drop_multiplexed_model_id()
        async with self._admission.turn():
            stream = await getattr(self._engine, call_method)(body, info)
            async with aclosing(stream):
                async for chunk in stream:
                    yield chunk

    async def __del__(self) -> None:
        # Serve's ingress wrapper shuts the ASGI app down itself, then calls this.
        closing = self._engine.__del__() if hasattr(self, "_engine") else None
        if inspect.isawaitable(closing):
            await closing


def _drop_multiplexed_model_id() -> None:
    """The engine server would read a client's ``serve_multiplexed_model_id`` header
    as a LoRA request; through a handle it never reached the engine, nor does it here."""
    context = serve_context._serve_request_context.get()
    if context is not None and context.multiplexed_model_id:
        serve_context._serve_request_context.set(
            dataclasses.replace(context, multiplexed_model_id="")
        )
