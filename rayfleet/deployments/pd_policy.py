"""Per-request disaggregation: decide, remote-prefill, fall back. No Ray, no vLLM.

The decode replica orchestrates (Ray Serve LLM's decode-as-orchestrator design), so
"uncached" means: not already in this decode engine's prefix cache. A prompt whose
uncached part is short is cheaper to prefill locally than to ship over; a long one
goes through the prefill pool unless that pool is backed up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rayfleet.router.hashing import token_block_keys
from rayfleet.router.index import BlockIndex
from rayfleet.router.prompt import PromptInput
from rayfleet.router.tokens import CachedTokenizer

logger = logging.getLogger(__name__)

Path = Literal["disaggregated", "local"]
_LOCAL_ENGINE = "decode"  # the one replica this orchestrator's index tracks: itself


@dataclass(frozen=True)
class PDPolicy:
    min_uncached_tokens: int = 256
    # Counted per decode replica: its own requests in remote prefill (what it can see).
    max_prefill_queue: int = 8
    block_tokens: int = 128
    cache_capacity_blocks: int = 2048
    chars_per_token: float = 4.0


def choose_path(uncached_tokens: int, prefill_queue: int, policy: PDPolicy) -> Path:
    """Remote prefill only pays for long uncached prompts and a prefill pool with room."""
    if uncached_tokens < policy.min_uncached_tokens:
        return "local"
    if prefill_queue > policy.max_prefill_queue:
        return "local"
    return "disaggregated"


class UncachedEstimator:
    """Tokens of a prompt the decode engine would still have to prefill.

    Token ids come from the model's tokenizer (cached per prompt); without one, the
    length is estimated from characters. Prompts served here are remembered as block
    chains in the router's BlockIndex, an LRU sized like the engine's KV cache.
    """

    def __init__(self, policy: PDPolicy, tokenizer: CachedTokenizer | None) -> None:
        self._policy = policy
        self._tokenizer = tokenizer
        self._index = BlockIndex(policy.cache_capacity_blocks)

    def _token_ids(self, prompt: PromptInput) -> Sequence[int] | None:
        if prompt.token_ids is not None:
            return prompt.token_ids
        if self._tokenizer is None:
            return None
        try:
            return self._tokenizer.encode(prompt)
        except Exception as error:  # a chat the template rejects: the engine will say why
            logger.debug("tokenizing for the PD estimate failed: %s", error)
            return None

    def uncached_tokens(self, prompt: PromptInput) -> int:
        ids = self._token_ids(prompt)
        if ids is None:
            return int(len(prompt.text) / self._policy.chars_per_token)
        keys = token_block_keys(ids, self._policy.block_tokens)
        cached = self._index.matched_blocks(_LOCAL_ENGINE, keys) * self._policy.block_tokens
        return len(ids) - cached

    def remember(self, prompt: PromptInput) -> None:
        ids = self._token_ids(prompt)
        if ids is not None:
            self._index.insert_chain(
                _LOCAL_ENGINE, token_block_keys(ids, self._policy.block_tokens)
            )


class PDMetrics(Protocol):
    def decision(self, path: Path) -> None: ...

    def fallback(self, reason: str) -> None: ...

    def transfer(self, prompt_tokens: int, seconds: float) -> None: ...

    def queues(self, prefill: int, decode: int) -> None: ...


@dataclass
class Handoff:
    """What remote prefill produced: the decode request, or why to prefill locally."""

    decode_request: Any | None
    failure: str | None = None


PrefillCall = Callable[[Any], AsyncIterator[Any]]
PrepareDecode = Callable[[Any], Any]  # prefill response chunk → decode request


def _is_error(chunk: Any) -> bool:
    return type(chunk).__name__ == "ErrorResponse"


def _prompt_tokens(chunk: Any) -> int:
    usage = getattr(chunk, "usage", None)
    return int(getattr(usage, "prompt_tokens", 0) or 0)


async def remote_prefill(
    prefill: PrefillCall,
    prefill_request: Any,
    prepare_decode: PrepareDecode,
    metrics: PDMetrics,
) -> Handoff:
    """Run prefill on the prefill pool; any failure becomes a reason, never an error."""
    started = time.perf_counter()
    try:
        stream = prefill(prefill_request)
        first = await anext(aiter(stream))
        async for _ in stream:  # prefill is clamped to one token: draining is bounded
            pass
    except StopAsyncIteration:
        return Handoff(None, "empty")
    except Exception as error:  # replica died, connector failed, deployment unavailable
        logger.warning("remote prefill failed, prefilling on decode: %r", error)
        return Handoff(None, type(error).__name__)
    if isinstance(first, list):
        first = first[0] if first else None
    if first is None or _is_error(first):
        logger.warning("remote prefill answered an error, prefilling on decode: %s", first)
        return Handoff(None, "error_response")
    metrics.transfer(_prompt_tokens(first), time.perf_counter() - started)
    return Handoff(prepare_decode(first))


async def serve_request(
    request: Any,
    *,
    path: Path,
    prefill: PrefillCall,
    prepare_prefill: Callable[[Any], Any],
    prepare_decode: PrepareDecode,
    local: Callable[[Any], Awaitable[AsyncIterator[Any]]],
    metrics: PDMetrics,
) -> AsyncIterator[Any]:
    """Stream the response: local prefill, or remote prefill then decode here."""
    decode_request = request
    if path == "disaggregated":
        handoff = await remote_prefill(prefill, prepare_prefill(request), prepare_decode, metrics)
        if handoff.failure is not None:
            metrics.fallback(handoff.failure)
        else:
            decode_request = handoff.decode_request
    async for chunk in await local(decode_request):
        yield chunk
