"""SimLLMServer answers like Ray Serve LLM's LLMServer over vLLM (no Ray cluster needed)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
)
from ray.serve.llm import LLMConfig

from rayfleet.bench.sim.server import SimEngine, SimLLMServer
from rayfleet.router.load import parse_routing_stats

PROMPT = "the router sends each request to a replica " * 40  # about 320 word tokens
ENGINE_MODULES = ("vllm.v1.engine.async_llm", "ray.llm._internal.serve.engines.vllm.vllm_engine")


def llm_config(sim: dict[str, Any] | None = None, source: str = "sim-model") -> LLMConfig:
    return LLMConfig.model_validate(
        {
            "model_loading_config": {"model_id": "sim-model", "model_source": source},
            "engine_kwargs": {"max_model_len": 2048, "block_size": 64},
            "experimental_configs": {
                "sim": {"tokenizer": "words", "time_scale": 1e4, **(sim or {})}
            },
            "runtime_env": {"env_vars": {"A": "1"}},
            "deployment_config": {"name": "sim", "num_replicas": 4},
        }
    )


async def started(config: LLMConfig) -> SimLLMServer:
    server = SimLLMServer.sync_init(config)
    await server.start()
    assert isinstance(server, SimLLMServer)
    return server


@pytest.fixture
async def server() -> AsyncIterator[SimLLMServer]:
    loaded_before = {m for m in ENGINE_MODULES if m in sys.modules}
    sim = await started(llm_config())
    yield sim
    await sim.engine.shutdown()  # type: ignore[union-attr]
    assert {m for m in ENGINE_MODULES if m in sys.modules} == loaded_before  # no vLLM engine


async def drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


def sse_payloads(batches: list[Any]) -> list[Any]:
    """Every batch is a list of SSE strings; returns the JSON payloads and "[DONE]"."""
    assert all(isinstance(batch, list) for batch in batches)
    lines = [line for batch in batches for line in batch]
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    return [
        line[6:].strip() if "[DONE]" in line else json.loads(line[6:].strip()) for line in lines
    ]


async def test_streamed_completion(server: SimLLMServer) -> None:
    request = CompletionRequest(
        model="sim-model",
        prompt=PROMPT,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    payloads = sse_payloads(await drain(await server.completions(request)))
    assert payloads[-1] == "[DONE]"
    tokens, usage = payloads[:-2], payloads[-2]
    assert [p["choices"][0]["finish_reason"] for p in tokens] == [None] * 4 + ["length"]
    assert all(p["object"] == "text_completion" and p["choices"][0]["text"] for p in tokens)
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


async def test_repeated_prompt_reports_cached_tokens(server: SimLLMServer) -> None:
    request = CompletionRequest(model="sim-model", prompt=PROMPT, max_tokens=3)
    (first,) = await drain(await server.completions(request))
    (second,) = await drain(await server.completions(request.model_copy()))
    assert isinstance(first, CompletionResponse) and isinstance(second, CompletionResponse)
    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details
    assert cached is not None and cached.cached_tokens == first.usage.prompt_tokens // 64 * 64
    assert second.choices[0].text == first.choices[0].text  # deterministic outputs


async def test_streamed_chat_opens_with_the_role(server: SimLLMServer) -> None:
    request = ChatCompletionRequest(
        model="sim-model",
        messages=[{"role": "user", "content": "hello there"}],
        max_completion_tokens=4,
        stream=True,
    )
    payloads = sse_payloads(await drain(await server.chat(request)))
    deltas = [p["choices"][0]["delta"] for p in payloads[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert len(deltas) == 5 and all(d["content"] for d in deltas[1:])
    assert payloads[-2]["object"] == "chat.completion.chunk"
    assert payloads[-2]["choices"][0]["finish_reason"] == "length"


async def test_whole_chat_and_token_id_prompts(server: SimLLMServer) -> None:
    chat = ChatCompletionRequest(
        model="sim-model", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    (answer,) = await drain(await server.chat(chat))
    assert isinstance(answer, ChatCompletionResponse)
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content
    ids = CompletionRequest(model="sim-model", prompt=list(range(100)), max_tokens=2)
    (completion,) = await drain(await server.completions(ids))
    assert completion.usage.prompt_tokens == 100


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": "x " * 3000},  # longer than max_model_len
        {"prompt": "x", "n": 2},
        {"prompt": ["a", "b"]},
    ],
)
async def test_bad_requests_get_a_400(server: SimLLMServer, fields: dict[str, Any]) -> None:
    request = CompletionRequest(model="sim-model", max_tokens=4, **fields)
    (answer,) = await drain(await server.completions(request))
    assert isinstance(answer, ErrorResponse) and answer.error.code == 400


async def test_routing_stats_health_and_deployment_options(server: SimLLMServer) -> None:
    stats = await server.record_routing_stats()
    parsed = parse_routing_stats(stats, received_at=0.0)
    assert parsed is not None and parsed.num_running == 0 and parsed.kv_cache_usage == 0.0
    assert parsed.reported_at > 0
    await server.check_health()
    options = SimLLMServer.get_deployment_options(llm_config())
    assert "placement_group_bundles" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0, "runtime_env": {"env_vars": {"A": "1"}}}
    assert options["num_replicas"] == 4


async def test_prefill_hands_its_blocks_to_decode() -> None:
    prefill = await started(llm_config({"role": "prefill"}))
    decode = await started(llm_config({"role": "decode"}))
    request = CompletionRequest(model="sim-model", prompt=PROMPT, max_tokens=1)
    (handoff,) = await drain(await prefill.completions(request))
    params = handoff.kv_transfer_params
    assert params["do_remote_prefill"] is True and params["sim_num_tokens"] >= 256
    follow_up = CompletionRequest(
        model="sim-model", prompt=PROMPT, max_tokens=4, kv_transfer_params=params
    )
    (answer,) = await drain(await decode.completions(follow_up))
    assert answer.usage.completion_tokens == 4
    assert isinstance(decode.engine, SimEngine) and decode.engine.engine is not None
    assert decode.engine.engine.core.imported_tokens == params["sim_num_tokens"]
    for sim in (prefill, decode):
        await sim.engine.shutdown()  # type: ignore[union-attr]


async def test_auto_tokenizer_reads_the_model_folder(tiny_dir: Path) -> None:
    from tokenizers import Tokenizer

    sim = await started(llm_config({"tokenizer": "auto"}, source=str(tiny_dir)))
    request = CompletionRequest(model="sim-model", prompt="the cache serves", max_tokens=2)
    (answer,) = await drain(await sim.completions(request))
    expected = len(Tokenizer.from_file(str(tiny_dir / "tokenizer.json")).encode(request.prompt))
    assert answer.usage.prompt_tokens == expected
    await sim.engine.shutdown()  # type: ignore[union-attr]
