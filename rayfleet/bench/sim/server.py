"""Ray Serve adapter: ``SimLLMServer``, an LLMServer whose engine is the simulator.

Use it as an LLMConfig's ``server_cls`` ("rayfleet.bench.sim.server:SimLLMServer") or
``build_llm_deployment(config, deployment_cls=SimLLMServer)``. Simulator parameters go
in ``llm_config.experimental_configs["sim"]`` (see ``SimParams``); vLLM engine kwargs
such as ``max_num_seqs`` fill the ones left out.

Everything above the engine is Ray Serve LLM's own LLMServer: request ids, multiplexing
checks, ``chat``/``completions(request, raw_request_info)`` returning lists of SSE
strings when streaming (RayFleet's leading-edge batching) or response objects
otherwise, ``check_health`` and ``record_routing_stats``. So routers and the ingress
cannot tell a simulated replica from a real one. No vLLM engine is imported or
started; only vLLM's OpenAI protocol models are used, through Ray's.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, TypeVar

from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
)
from ray.llm._internal.serve.core.engine.protocol import LLMEngine
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.serve.llm.deployment import LLMServer

from rayfleet.bench.sim.blocks import BlockHash
from rayfleet.bench.sim.driver import AsyncSimEngine
from rayfleet.bench.sim.engine import SimRequest, request_error
from rayfleet.bench.sim.metrics import SimMetrics, replica_id
from rayfleet.bench.sim.params import SimParams, sim_params_from
from rayfleet.bench.sim.responses import Answer, error_response, stream_answer, whole_answer
from rayfleet.bench.sim.tokens import SimTokenizer, load_sim_tokenizer
from rayfleet.deployments.streaming import leading_edge_batches

T = TypeVar("T")
Request = CompletionRequest | ChatCompletionRequest


class SimEngine(LLMEngine):
    """The LLMEngine interface over ``AsyncSimEngine``."""

    def __init__(self, llm_config: Any) -> None:
        self._llm_config = llm_config
        self.params: SimParams = sim_params_from(
            llm_config.experimental_configs.get("sim"), llm_config.engine_kwargs
        )
        self.model_id: str = llm_config.model_id
        self.tokenizer: SimTokenizer | None = None
        self.engine: AsyncSimEngine | None = None
        self.engine_id = f"sim-{replica_id() or id(self)}"

    async def start(self) -> None:
        source = getattr(self._llm_config.model_loading_config, "model_source", None)
        self.tokenizer = await asyncio.to_thread(
            load_sim_tokenizer, self.params.tokenizer, source if isinstance(source, str) else None
        )
        self.engine = AsyncSimEngine(self.params, self.tokenizer.output_token_ids)
        if self._llm_config.log_engine_metrics:
            self.engine.on_step = SimMetrics(self.engine.core, self.model_id).on_step
        self.engine.start()

    async def shutdown(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    def routing_stats(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        core = self.engine.core
        return {
            "num_running": len(core.running),
            "num_waiting": len(core.waiting),
            "kv_cache_usage": core.kv_cache_usage,
            "reported_at": time.time(),
        }

    async def check_health(self) -> None:
        if self.engine is None:
            raise RuntimeError("the simulated engine was not started")
        self.engine.check_health()

    async def reset_prefix_cache(self) -> None:
        if self.engine is not None:
            self.engine.core.reset_prefix_cache()

    async def resolve_lora(self, lora_model: Any) -> None:
        raise ValueError("the simulated engine does not serve LoRA adapters")

    # --- generation --------------------------------------------------------------------

    async def completions(  # type: ignore[override]
        self, request: CompletionRequest, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._answer(request, chat=False):
            yield item

    async def chat(  # type: ignore[override]
        self, request: ChatCompletionRequest, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[Any, None]:
        async for item in self._answer(request, chat=True):
            yield item

    async def embeddings(  # type: ignore[override]
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        yield error_response("The simulated engine does not compute embeddings.")

    async def transcriptions(  # type: ignore[override]
        self, request: Any, raw_request_info: Any = None
    ) -> AsyncGenerator[Any, None]:
        yield error_response("The simulated engine does not transcribe audio.")

    async def score(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        yield error_response("The simulated engine does not score.")

    async def _answer(self, request: Request, chat: bool) -> AsyncGenerator[Any, None]:
        if self.engine is None or self.tokenizer is None:
            yield error_response("The simulated engine is not running.", 503)
            return
        try:
            prompt = self._prompt_ids(request, chat)
        except ValueError as error:
            yield error_response(str(error))
            return
        max_tokens = self._max_tokens(request, len(prompt))
        if problem := request_error(self.params, len(prompt), max_tokens):
            yield error_response(problem)
            return
        answer = Answer(
            id=f"{'chatcmpl' if chat else 'cmpl'}-{request.request_id}",
            model=request.model or self.model_id,
            chat=chat,
            prompt_tokens=len(prompt),
        )
        events = self.engine.generate(
            prompt, max_tokens, request.request_id, self._import_hashes(request)
        )
        text_of = self.tokenizer.output_text
        if request.stream:
            options = request.stream_options
            include_usage = bool(options and options.include_usage)
            async for chunk in stream_answer(answer, events, text_of, include_usage):
                yield chunk
        else:
            transfer = self._kv_transfer_params if self.params.role == "prefill" else None
            yield await whole_answer(answer, events, text_of, transfer)

    def _prompt_ids(self, request: Request, chat: bool) -> Sequence[int]:
        assert self.tokenizer is not None
        if (getattr(request, "n", 1) or 1) > 1:
            raise ValueError("The simulated engine returns one choice per request (n=1).")
        if chat:
            return self.tokenizer.encode_chat(getattr(request, "messages", None) or [])
        prompt: Any = getattr(request, "prompt", None)
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            if len(prompt) > 1:
                raise ValueError("The simulated engine serves one prompt per request.")
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return tuple(prompt)
        raise ValueError("The prompt must be a string or a list of token ids.")

    def _max_tokens(self, request: Request, prompt_len: int) -> int:
        if self.params.role == "prefill":
            return 1
        # Read the fields' values directly: chat's max_tokens warns on attribute access.
        fields = vars(request)
        wanted = fields.get("max_completion_tokens") or fields.get("max_tokens")
        return int(wanted) if wanted is not None else self.params.max_model_len - prompt_len

    def _import_hashes(self, request: Request) -> Sequence[BlockHash]:
        """Blocks a prefill engine computed (decode role), from its kv_transfer_params."""
        params = getattr(request, "kv_transfer_params", None) or {}
        if self.params.role != "decode" or params.get("sim_block_size") != self.params.block_size:
            return ()
        return tuple(int(h) for h in params.get("sim_block_hashes") or ())

    def _kv_transfer_params(self, request: SimRequest) -> dict[str, Any]:
        """What a decode engine needs to import this request's prompt blocks."""
        hashes = request.transfer_hashes(self.params.block_size)
        return {
            "do_remote_prefill": True,
            "do_remote_decode": False,
            "remote_engine_id": self.engine_id,
            "remote_block_ids": request.blocks[: len(hashes)],
            "remote_host": "sim",
            "remote_port": 0,
            "sim_block_hashes": hashes,
            "sim_block_size": self.params.block_size,
            "sim_num_tokens": len(hashes) * self.params.block_size,
        }


class SimLLMServer(LLMServer):
    """LLMServer with the simulated engine: one replica = one simulated vLLM engine."""

    def _get_default_engine_class(self) -> type[LLMEngine]:
        return SimEngine

    def __del__(self) -> None:  # type: ignore[override]
        # LLMServer's is a coroutine, which garbage collection never awaits.
        engine = getattr(self, "engine", None)
        if isinstance(engine, SimEngine) and engine.engine is not None:
            engine.engine.close()

    async def _start_engine(self) -> None:
        # LLMServer's version also pushes usage telemetry, meaningless for a simulator.
        if self.engine is None:
            raise ValueError("Engine is not set")
        await self.engine.start()

    def _batch_output_stream(self, generator: AsyncGenerator[T, None]) -> Any:
        # Same batching as RayFleet's real engine deployment (RayFleetLLMServer).
        return leading_edge_batches(generator, self._get_batch_interval_ms() / 1000)

    @classmethod
    def get_deployment_options(cls, llm_config: Any) -> dict[str, Any]:  # type: ignore[override]
        """The deployment config as given: no engine placement group, and by default no
        CPU reserved for the replica (a simulated engine barely uses one)."""
        options = copy.deepcopy(llm_config.deployment_config)
        actor = options.setdefault("ray_actor_options", {})
        actor.setdefault("num_cpus", 0)
        if llm_config.runtime_env:
            actor["runtime_env"] = {**actor.get("runtime_env", {}), **llm_config.runtime_env}
        return options
