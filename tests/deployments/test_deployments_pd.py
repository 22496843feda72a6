"""Prefill/decode: the per-request decision, the KV connector per backend, pool checks,
and the fallback to local prefill when remote prefill fails."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ray.serve.llm import LLMConfig

from rayfleet.deployments.pd_config import PD_SETTINGS_KEY, PoolMismatchError
from rayfleet.deployments.pd_policy import (
    PDPolicy,
    UncachedEstimator,
    choose_path,
    serve_request,
)
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import load_spec, parse_spec
from rayfleet.router.prompt import PromptInput
from rayfleet.router.tokens import CachedTokenizer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICY = PDPolicy(min_uncached_tokens=256, max_prefill_queue=2, block_tokens=4)


# --- decision --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uncached", "queue", "path"),
    [
        (255, 0, "local"),  # too short to pay for a transfer
        (256, 0, "disaggregated"),
        (5000, 2, "disaggregated"),  # queue at the limit still takes work
        (5000, 3, "local"),  # prefill pool backed up
    ],
)
def test_choose_path(uncached: int, queue: int, path: str) -> None:
    assert choose_path(uncached, queue, POLICY) == path


def _char_tokenizer() -> CachedTokenizer:
    return CachedTokenizer(lambda text: [ord(c) for c in text])


def test_uncached_tokens_drop_by_the_full_blocks_decode_already_holds() -> None:
    estimator = UncachedEstimator(POLICY, _char_tokenizer())
    served = PromptInput(text="abcdefghij")  # 10 tokens: 2 full blocks of 4
    assert estimator.uncached_tokens(served) == 10
    estimator.remember(served)
    assert estimator.uncached_tokens(served) == 2
    assert estimator.uncached_tokens(PromptInput(text="abcdXXXXXXXX")) == 8  # 1 block shared
    assert estimator.uncached_tokens(PromptInput(text="Zbcdefghij")) == 10


def test_uncached_tokens_without_tokenizer_count_characters() -> None:
    estimator = UncachedEstimator(PDPolicy(chars_per_token=4.0), None)
    assert estimator.uncached_tokens(PromptInput(text="x" * 400)) == 100


# --- rendering: connectors and pool agreement --------------------------------------------


def _engines(spec: Any) -> dict[str, dict[str, Any]]:
    app = render_serve_config(resolve(spec))["applications"][0]
    return {e["role"]: e["llm_config"] for e in app["args"]["engines"]}


def _split_spec(accelerator: dict, **model: Any) -> Any:
    pools = {"prefill": {"accelerator": accelerator}, "decode": {"accelerator": accelerator}}
    return parse_spec({"name": "pd", "models": [{"id": "m", "pools": pools, **model}]})


def test_cpu_auto_uses_shared_storage_on_both_engines() -> None:
    engines = _engines(load_spec(EXAMPLES / "cpu-tiny-pd.yaml"))
    for config in engines.values():
        kv = config["engine_kwargs"]["kv_transfer_config"]
        assert kv["kv_connector"] == "ExampleConnector"
        assert kv["kv_connector_extra_config"]["shared_storage_path"].endswith("/tiny-llama")
        LLMConfig.model_validate(config)
    settings = engines["decode"]["experimental_configs"][PD_SETTINGS_KEY]
    assert settings["min_uncached_tokens"] == 256
    assert PD_SETTINGS_KEY not in engines["prefill"]["experimental_configs"]
    # each engine pinned to its own core
    offsets = {
        r: c["runtime_env"]["env_vars"]["RAYFLEET_CPU_CORE_OFFSET"] for r, c in engines.items()
    }
    assert offsets == {"prefill": "0", "decode": "1"}


def test_gpu_auto_uses_nixl_with_decode_side_channel_moved() -> None:
    engines = _engines(load_spec(EXAMPLES / "gpu-h100-pd-llama-70b.yaml"))
    assert {c["engine_kwargs"]["kv_transfer_config"]["kv_connector"] for c in engines.values()} == {
        "NixlConnector"
    }
    assert engines["decode"]["experimental_configs"]["NIXL_SIDE_CHANNEL_PORT_BASE"] == 22000


def test_tpu_auto_uses_the_tpu_connector() -> None:
    spec = _split_spec({"kind": "tpu", "version": "v6e", "topology": "2x4"})
    engines = _engines(spec)
    assert engines["decode"]["engine_kwargs"]["kv_transfer_config"]["kv_connector"] == (
        "TPUConnector"
    )


def test_connector_that_cannot_run_on_the_pools_is_rejected() -> None:
    spec = _split_spec({"kind": "cpu"}, disaggregation={"connector": "nixl"})
    with pytest.raises(PoolMismatchError, match="'nixl' does not run on cpu"):
        _engines(spec)


def test_pools_with_different_kv_settings_are_rejected() -> None:
    spec = _split_spec({"kind": "cpu"})
    data = spec.model_dump()
    data["models"][0]["pools"]["decode"]["engine_kwargs"] = {"kv_cache_dtype": "fp8"}
    with pytest.raises(PoolMismatchError, match="kv_cache_dtype: prefill=None decode='fp8'"):
        _engines(parse_spec(data))


def test_pools_on_different_hardware_are_rejected() -> None:
    spec = _split_spec({"kind": "cpu"})
    data = copy.deepcopy(spec.model_dump())
    data["models"][0]["pools"]["decode"]["accelerator"] = {
        "kind": "gpu",
        "type": "nvidia-h100-80gb",
        "count": 1,
    }
    with pytest.raises(PoolMismatchError, match="prefill runs on cpu but decode on gpu"):
        _engines(parse_spec(data))


# --- orchestration and fallback ------------------------------------------------------------


class FakeMetrics:
    def __init__(self) -> None:
        self.fallbacks: list[str] = []
        self.transfers: list[int] = []

    def decision(self, path: str) -> None:
        pass

    def fallback(self, reason: str) -> None:
        self.fallbacks.append(reason)

    def transfer(self, prompt_tokens: int, seconds: float) -> None:
        self.transfers.append(prompt_tokens)

    def queues(self, prefill: int, decode: int) -> None:
        pass


class Usage:
    prompt_tokens = 300


class PrefillChunk:
    def __init__(self) -> None:
        self.usage = Usage()
        self.kv_transfer_params = {"remote_block_ids": [1, 2]}


class ErrorResponse:  # matched by name, as vLLM's
    pass


def _prefill_that(behaviour: str):
    async def prefill(request: Any) -> AsyncIterator[Any]:
        if behaviour == "dies":
            raise RuntimeError("prefill replica died")
        yield ErrorResponse() if behaviour == "errors" else PrefillChunk()

    return prefill


def _run(path: str, prefill) -> tuple[list[str], list[Any], FakeMetrics]:
    seen: list[Any] = []
    metrics = FakeMetrics()

    async def local(request: Any) -> AsyncIterator[str]:
        seen.append(request)

        async def stream() -> AsyncIterator[str]:
            yield "tok1"
            yield "tok2"

        return stream()

    async def collect() -> list[str]:
        return [
            chunk
            async for chunk in serve_request(
                {"prompt": "p"},
                path=path,  # type: ignore[arg-type]
                prefill=prefill,
                prepare_prefill=lambda r: {**r, "max_tokens": 1},
                prepare_decode=lambda chunk: {"prompt": "p", "kv": chunk.kv_transfer_params},
                local=local,
                metrics=metrics,
            )
        ]

    return asyncio.run(collect()), seen, metrics


def test_disaggregated_decodes_with_the_params_prefill_returned() -> None:
    chunks, seen, metrics = _run("disaggregated", _prefill_that("works"))
    assert chunks == ["tok1", "tok2"]
    assert seen == [{"prompt": "p", "kv": {"remote_block_ids": [1, 2]}}]
    assert (metrics.fallbacks, metrics.transfers) == ([], [300])


@pytest.mark.parametrize(
    ("behaviour", "reason"), [("dies", "RuntimeError"), ("errors", "error_response")]
)
def test_failed_prefill_falls_back_to_local_prefill(behaviour: str, reason: str) -> None:
    chunks, seen, metrics = _run("disaggregated", _prefill_that(behaviour))
    assert chunks == ["tok1", "tok2"]  # the request does not fail
    assert seen == [{"prompt": "p"}]  # decode prefills the original request itself
    assert metrics.fallbacks == [reason]


def test_local_path_never_calls_prefill() -> None:
    chunks, seen, metrics = _run("local", _prefill_that("dies"))
    assert chunks == ["tok1", "tok2"]
    assert seen == [{"prompt": "p"}] and metrics.fallbacks == []


# --- the app builder's checks (they run before anything is deployed) -----------------------


def _split_engine_args() -> list[dict[str, Any]]:
    app = render_serve_config(resolve(load_spec(EXAMPLES / "cpu-tiny-pd.yaml")))["applications"][0]
    return app["args"]["engines"]


def test_app_rejects_a_model_with_only_one_of_the_split_pools() -> None:
    from rayfleet.deployments.app import build_app

    prefill_only = [e for e in _split_engine_args() if e["role"] == "prefill"]
    with pytest.raises(ValueError, match=r"has engines \['prefill'\]"):
        build_app({"engines": prefill_only})


def test_pd_deployments_need_kv_transfer_on_both_engines() -> None:
    from rayfleet.deployments.pd import build_pd_deployments

    configs = {e["role"]: LLMConfig.model_validate(e["llm_config"]) for e in _split_engine_args()}
    del configs["prefill"].engine_kwargs["kv_transfer_config"]

    def never_built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be built from a broken pair")

    with pytest.raises(ValueError, match="prefill engine of 'tiny-llama' has no kv_transfer"):
        build_pd_deployments(configs["prefill"], configs["decode"], never_built)
