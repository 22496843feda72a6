"""Prefill and decode engine deployments with per-request conditional disaggregation.

Built on Ray Serve LLM's decode-as-orchestrator PD pattern: the ingress calls the
decode deployment, which holds a handle to the prefill deployment. Ray's
``PDDecodeServer`` always prefills remotely; ours decides per request
(pd_policy.choose_path), and turns a failed remote prefill into a local one.
Connectors that need peer binding or concurrent handoff (MoRIIO) keep Ray's own
orchestration.

Metrics (``ray.util.metrics``; Ray's exporter prefixes ``ray_``):
``rayfleet_pd_decisions_total{path}``, ``rayfleet_pd_fallbacks_total{reason}``,
``rayfleet_pd_prefill_handoff_seconds`` and ``rayfleet_pd_handoff_prompt_tokens``
(prefill + KV handoff time and size, measured at the orchestrator), and
``rayfleet_pd_queue{pool}`` (requests this decode replica has in each pool).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray.llm._internal.serve.serving_patterns.prefill_decode.pd_server import (
    PDOrchestratorMixin,
    PDPrefillServer,
)
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

from rayfleet.deployments.pd_config import PD_SETTINGS_KEY
from rayfleet.deployments.pd_policy import (
    Path,
    PDPolicy,
    UncachedEstimator,
    choose_path,
    serve_request,
)
from rayfleet.deployments.server import RayFleetLLMServer, prepare_replica
from rayfleet.router.prompt import prompt_input
from rayfleet.router.tokens import CachedTokenizer

logger = logging.getLogger(__name__)

TOKEN_BUCKETS = [128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0]
SECONDS_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class RayPDMetrics:
    def __init__(self, model_id: str) -> None:
        from ray.util import metrics

        tags = {"model": model_id}
        self._decisions = metrics.Counter(
            "rayfleet_pd_decisions_total", "PD routing decisions by path.", ("model", "path")
        ).set_default_tags(tags)
        self._fallbacks = metrics.Counter(
            "rayfleet_pd_fallbacks_total",
            "Remote prefills that failed and were redone on decode.",
            ("model", "reason"),
        ).set_default_tags(tags)
        self._seconds = metrics.Histogram(
            "rayfleet_pd_prefill_handoff_seconds",
            "Remote prefill until its KV handoff answered.",
            SECONDS_BUCKETS,
            ("model",),
        ).set_default_tags(tags)
        self._tokens = metrics.Histogram(
            "rayfleet_pd_handoff_prompt_tokens",
            "Prompt tokens whose KV was prefilled remotely.",
            TOKEN_BUCKETS,
            ("model",),
        ).set_default_tags(tags)
        self._queue = metrics.Gauge(
            "rayfleet_pd_queue", "Requests in flight per pool.", ("model", "pool")
        ).set_default_tags(tags)

    def decision(self, path: Path) -> None:
        self._decisions.inc(tags={"path": path})

    def fallback(self, reason: str) -> None:
        self._fallbacks.inc(tags={"reason": reason})

    def transfer(self, prompt_tokens: int, seconds: float) -> None:
        self._tokens.observe(max(prompt_tokens, 1))
        self._seconds.observe(seconds)

    def queues(self, prefill: int, decode: int) -> None:
        self._queue.set(prefill, tags={"pool": "prefill"})
        self._queue.set(decode, tags={"pool": "decode"})


def _tokenizer_for(llm_config: Any) -> CachedTokenizer | None:
    source = llm_config.engine_kwargs.get("tokenizer") or (
        llm_config.model_loading_config.model_source
    )
    try:
        return CachedTokenizer.from_pretrained(str(source))
    except Exception as error:  # estimate from characters instead
        logger.warning("no tokenizer for the PD estimate (%s); using characters", error)
        return None


class RayFleetPDPrefillServer(PDPrefillServer, RayFleetLLMServer):
    """Ray's prefill server (pre-warm, replica metadata) with RayFleet's replica setup."""


class RayFleetPDDecodeServer(PDOrchestratorMixin, RayFleetLLMServer):
    async def __init__(  # type: ignore[misc]
        self, llm_config: Any, *, prefill_server: DeploymentHandle, **kwargs: Any
    ) -> None:
        self._prefill_handle = prefill_server.options(stream=True)
        llm_config = prepare_replica(llm_config)  # the tiny model must exist before tokenizing
        settings = llm_config.experimental_configs.get(PD_SETTINGS_KEY, {})
        self._policy = PDPolicy(**settings)
        self._estimator = UncachedEstimator(self._policy, _tokenizer_for(llm_config))
        self._pd_metrics = RayPDMetrics(llm_config.model_id)
        self._in_prefill = 0
        self._in_flight = 0
        await super().__init__(llm_config, **kwargs)

    async def chat(self, request: Any, raw_request_info: Any = None) -> Any:
        return self._serve("chat", request, raw_request_info)

    async def completions(self, request: Any, raw_request_info: Any = None) -> Any:
        return self._serve("completions", request, raw_request_info)

    def _decide(self, request: Any) -> Path:
        prompt = prompt_input([request])
        if prompt is None:
            return "local"
        uncached = self._estimator.uncached_tokens(prompt)
        # After this request, decode holds the prompt's KV whichever path it takes.
        self._estimator.remember(prompt)
        return choose_path(uncached, self._in_prefill, self._policy)

    async def _serve(self, method: str, request: Any, raw_request_info: Any) -> AsyncIterator[Any]:
        path = self._decide(request)
        self._pd_metrics.decision(path)
        backend = self._get_connector_backend()
        if path == "disaggregated" and (
            backend.requires_peer_binding or backend.concurrent_handoff
        ):
            async for chunk in self._pd_handle_request(request, raw_request_info):
                yield chunk
            return
        self._in_flight += 1
        try:
            async for chunk in serve_request(
                request,
                path=path,
                prefill=lambda r: self._prefill(method, r, raw_request_info),
                prepare_prefill=lambda r: backend.prepare_prefill_request(request=r, peer=None),
                prepare_decode=lambda chunk: backend.prepare_decode_request(
                    request=request, peer=None, prefill_response=chunk
                ),
                local=lambda r: self._local(method, r, raw_request_info),
                metrics=self._pd_metrics,
            ):
                yield chunk
        finally:
            self._in_flight -= 1
            self._pd_metrics.queues(self._in_prefill, self._in_flight)

    async def _prefill(self, method: str, request: Any, raw_request_info: Any) -> AsyncIterator:
        self._in_prefill += 1
        self._pd_metrics.queues(self._in_prefill, self._in_flight)
        try:
            async for chunk in getattr(self._prefill_handle, method).remote(
                request, raw_request_info
            ):
                yield chunk
        finally:
            self._in_prefill -= 1

    async def _local(self, method: str, request: Any, raw_request_info: Any) -> AsyncIterator:
        # The engine's own chat/completions, skipping this class's orchestration.
        return await getattr(RayFleetLLMServer, method)(self, request, raw_request_info)


def build_pd_deployments(
    prefill: Any, decode: Any, build: Callable[..., Application]
) -> Application:
    """The decode deployment (what the ingress calls), bound to the prefill deployment."""
    for role, config in (("prefill", prefill), ("decode", decode)):
        if not config.engine_kwargs.get("kv_transfer_config"):
            raise ValueError(f"the {role} engine of {config.model_id!r} has no kv_transfer_config")
    if prefill.model_id != decode.model_id:
        raise ValueError(f"prefill serves {prefill.model_id!r} but decode {decode.model_id!r}")
    prefill_app = build(prefill, deployment_cls=RayFleetPDPrefillServer)
    return build(
        decode,
        deployment_cls=RayFleetPDDecodeServer,
        bind_kwargs={"prefill_server": prefill_app},
    )
