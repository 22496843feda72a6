"""The simulated engine's core: continuous batching over a prefix-cached block pool.

Pure and clock-free: ``begin_step(now)`` schedules one step and prices it with
``SimParams.step_time``; ``finish_step(plan)`` applies it at ``plan.end_s``. A driver
decides how time passes (``virtual.VirtualFleet`` jumps, ``driver.AsyncSimEngine``
sleeps).

Scheduling follows vLLM v1's: running requests first (a decode costs one token of the
``max_num_batched_tokens`` budget, a prefill the next chunk that fits), then waiting
requests first-come first-served while the budget, ``max_num_seqs`` and the KV pool
allow. There is no preemption: a request is admitted only when the pool can hold
everything it and every running request will still need, so the KV cache never
overflows; until then the queue waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from rayfleet.bench.sim.blocks import BlockHash, KvBlockPool, block_hashes, max_hit_blocks
from rayfleet.bench.sim.params import SimParams

_DEFAULT_VOCAB = tuple(range(16, 1040))
_MASK64 = (1 << 64) - 1


@dataclass(eq=False)
class SimRequest:
    """One request and what the engine did with it (times are simulated seconds)."""

    request_id: str
    prompt_token_ids: Sequence[int]
    max_tokens: int
    arrival_s: float = 0.0
    # Decode role: hashes of the prompt blocks a prefill engine computed.
    import_hashes: Sequence[BlockHash] = ()
    # Filled by the engine.
    hashes: list[BlockHash] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    footprint_blocks: int = 0  # blocks held when finished: prompt + output - 1 tokens
    num_computed: int = 0  # tokens whose KV is in the pool
    num_cached_tokens: int = 0  # prefix-cache hit
    num_imported_tokens: int = 0  # received from a prefill engine
    output_token_ids: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    seed_key: int = 0  # drives the pseudo output tokens
    scheduled_s: float | None = None
    finished_s: float | None = None
    aborted: bool = False

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def prefilling(self) -> bool:
        return self.num_computed < self.prompt_len

    @property
    def finished(self) -> bool:
        return len(self.output_token_ids) >= self.max_tokens

    @property
    def first_token_s(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    def transfer_hashes(self, block_size: int) -> list[BlockHash]:
        """Prompt blocks a decode engine may import (all full ones but a last-token block)."""
        return self.hashes[: max_hit_blocks(self.prompt_len, block_size)]


@dataclass(frozen=True)
class TokenEvent:
    request: SimRequest
    token_id: int
    finished: bool


@dataclass
class StepPlan:
    start_s: float
    prefill: list[tuple[SimRequest, int]] = field(default_factory=list)  # (request, chunk)
    decode: list[SimRequest] = field(default_factory=list)
    context_tokens: int = 0
    imported_tokens: int = 0
    duration_s: float = 0.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def prefill_tokens(self) -> int:
        return sum(chunk for _, chunk in self.prefill)


def request_error(params: SimParams, prompt_len: int, max_tokens: int) -> str | None:
    """Why the engine cannot serve this request, or None."""
    if prompt_len < 1:
        return "The prompt is empty."
    if max_tokens < 1:
        return f"max_tokens must be at least 1, got {max_tokens}."
    if prompt_len + max_tokens > params.max_model_len:
        return (
            f"This model's maximum context length is {params.max_model_len} tokens. However, "
            f"you requested {prompt_len + max_tokens} tokens ({prompt_len} in the input, "
            f"{max_tokens} for the completion)."
        )
    if params.blocks_for(prompt_len + max_tokens - 1) > params.num_kv_blocks:
        return f"The request needs more than the {params.num_kv_blocks} KV blocks of the engine."
    return None


class SimEngineCore:
    def __init__(self, params: SimParams, output_vocab: Sequence[int] | None = None) -> None:
        self.params = params
        self.pool = KvBlockPool(params.num_kv_blocks, params.enable_prefix_caching)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.prefix_cache_hits = 0  # tokens, like vLLM's counters
        self.prefix_cache_queries = 0
        self.imported_tokens = 0  # from prefill engines (vLLM: external prefix-cache hits)
        self._vocab = tuple(output_vocab or _DEFAULT_VOCAB)
        self._reserved = 0  # blocks running requests will still allocate

    # --- requests ----------------------------------------------------------------------

    def add(self, request: SimRequest) -> None:
        if self.params.role == "prefill":
            request.max_tokens = 1  # a prefill engine hands over after the first token
        error = request_error(self.params, request.prompt_len, request.max_tokens)
        if error:
            raise ValueError(error)
        request.hashes = block_hashes(request.prompt_token_ids, self.params.block_size)
        request.seed_key = hash((self.params.seed, tuple(request.prompt_token_ids)))
        request.footprint_blocks = self.params.blocks_for(
            request.prompt_len + request.max_tokens - 1
        )
        self.waiting.append(request)

    def abort(self, request: SimRequest) -> None:
        """Drop a request (its client went away); a step in flight skips it."""
        request.aborted = True
        if request in self.waiting:
            self.waiting.remove(request)
        elif request in self.running:
            # Blocks allocated for KV that was never computed must not be hit later.
            for block in request.blocks[request.num_computed // self.params.block_size :]:
                self.pool.forget(block)
            self._retire(request)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def kv_cache_usage(self) -> float:
        return self.pool.usage

    def reset_prefix_cache(self) -> bool:
        return self.pool.reset()

    # --- one step ----------------------------------------------------------------------

    def begin_step(self, now: float) -> StepPlan | None:
        """Schedule the next step at ``now``; None when there is nothing to run."""
        plan = StepPlan(start_s=now)
        budget = self.params.max_num_batched_tokens
        for request in self.running:
            if budget <= 0:
                break
            budget -= self._schedule(request, plan, budget)
        while self.waiting and budget > 0 and len(self.running) < self.params.max_num_seqs:
            request = self.waiting[0]
            if not self._admit(request, plan, now):
                break  # first come, first served: the head blocks the queue
            self.waiting.popleft()
            self.running.append(request)
            budget -= self._schedule(request, plan, budget)
        if not plan.prefill and not plan.decode:
            return None
        plan.duration_s = self.params.step_time(
            plan.prefill_tokens, len(plan.decode), plan.context_tokens, plan.imported_tokens
        )
        return plan

    def finish_step(self, plan: StepPlan) -> list[TokenEvent]:
        """Apply a step at its end: KV written, blocks cached, tokens sampled."""
        events: list[TokenEvent] = []
        for request, chunk in plan.prefill:
            if request.aborted:
                continue
            request.num_computed += chunk
            if not request.prefilling:
                events.append(self._sample(request, plan.end_s))
        for request in plan.decode:
            if not request.aborted:
                request.num_computed += 1
                events.append(self._sample(request, plan.end_s))
        return events

    # --- helpers -----------------------------------------------------------------------

    def _schedule(self, request: SimRequest, plan: StepPlan, budget: int) -> int:
        """Put the request's next piece of work in the plan; the budget it takes."""
        if request.prefilling:
            chunk = min(request.prompt_len - request.num_computed, budget)
            self._grow(request, request.num_computed + chunk)
            plan.prefill.append((request, chunk))
            return chunk
        self._grow(request, request.num_computed + 1)
        plan.decode.append(request)
        plan.context_tokens += request.num_computed + 1
        return 1

    def _admit(self, request: SimRequest, plan: StepPlan, now: float) -> bool:
        cap = max_hit_blocks(request.prompt_len, self.params.block_size)
        hit = self.pool.cached_prefix(request.hashes[:cap])
        free_after_hits = self.pool.num_free - self.pool.free_among(set(hit)) - self._reserved
        if free_after_hits < request.footprint_blocks - len(hit):
            return False
        self.pool.acquire(hit)
        request.blocks = list(hit)
        request.num_cached_tokens = len(hit) * self.params.block_size
        request.num_computed = request.num_cached_tokens
        request.scheduled_s = now
        self._reserved += request.footprint_blocks - len(hit)
        self.prefix_cache_queries += request.prompt_len
        self.prefix_cache_hits += request.num_cached_tokens
        plan.imported_tokens += self._import(request, cap)
        return True

    def _import(self, request: SimRequest, cap: int) -> int:
        """Take prompt blocks a prefill engine computed (decode role); tokens imported."""
        if self.params.role != "decode" or not request.import_hashes:
            return 0
        matched = 0
        for ours, theirs in zip(request.hashes[:cap], request.import_hashes, strict=False):
            if ours != theirs:
                break
            matched += 1
        extra = matched - len(request.blocks)
        if extra <= 0:
            return 0
        tokens = extra * self.params.block_size
        self._grow(request, request.num_computed + tokens)
        request.num_computed += tokens
        request.num_imported_tokens = tokens
        self.imported_tokens += tokens
        return tokens

    def _grow(self, request: SimRequest, tokens: int) -> None:
        """Allocate blocks so the request's KV can hold ``tokens`` tokens.

        A full prompt block is published to the cache as it is allocated, like vLLM's
        scheduler does: its KV is written by the step that needs it.
        """
        for _ in range(self.params.blocks_for(tokens) - len(request.blocks)):
            (block,) = self.pool.allocate(1)
            index = len(request.blocks)
            request.blocks.append(block)
            self._reserved -= 1
            if index < len(request.hashes):
                self.pool.register(block, request.hashes[index])

    def _sample(self, request: SimRequest, now: float) -> TokenEvent:
        token = self._pseudo_token(request, len(request.output_token_ids))
        request.output_token_ids.append(token)
        request.token_times.append(now)
        if request.finished:
            request.finished_s = now
            self._retire(request)
        return TokenEvent(request, token, request.finished)

    def _retire(self, request: SimRequest) -> None:
        self._reserved -= request.footprint_blocks - len(request.blocks)
        self.pool.release(request.blocks)
        self.running.remove(request)

    def _pseudo_token(self, request: SimRequest, position: int) -> int:
        """A deterministic token for (seed, prompt, position): splitmix64 of both."""
        x = (request.seed_key + position * 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return self._vocab[(x ^ (x >> 31)) % len(self._vocab)]
