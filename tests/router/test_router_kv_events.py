"""KV-cache events encoded by vLLM's own classes, decoded and indexed by the router."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.hashing import token_block_keys
from rayfleet.router.kv_events import (
    AllCleared,
    BlocksRemoved,
    BlocksStored,
    PreciseIndex,
    decode_event_batch,
)
from rayfleet.router.prompt import PromptInput
from rayfleet.router.tokens import CachedTokenizer

kv = pytest.importorskip("vllm.distributed.kv_events")
msgspec = pytest.importorskip("msgspec")

MakeRouter = Callable[..., CacheAwareRouter]
BLOCK = 128
TOKENS = list(range(1000, 1000 + 3 * BLOCK + 20))  # 3 full blocks and a partial one


def stored(hashes: Sequence[Any], parent: Any, tokens: Sequence[int], **extra: Any) -> Any:
    return kv.BlockStored(
        block_hashes=list(hashes),
        parent_block_hash=parent,
        token_ids=list(tokens),
        block_size=BLOCK,
        lora_id=None,
        medium="GPU",
        lora_name=None,
        **extra,
    )


def encode(*events: Any, ts: float = 1.0) -> bytes:
    batch = kv.KVEventBatch(ts=ts, events=list(events), data_parallel_rank=0)
    return msgspec.msgpack.Encoder().encode(batch)


H = [bytes([i]) * 32 for i in range(4)]  # sha256-sized hashes, as vLLM publishes by default
FIRST_TWO = stored(H[:2], None, TOKENS[: 2 * BLOCK])
THIRD = stored(H[2:3], H[1], TOKENS[2 * BLOCK : 3 * BLOCK])


def test_decodes_vllm_encoded_batches() -> None:
    removed = kv.BlockRemoved(block_hashes=[H[2]], medium="GPU")
    batch = decode_event_batch(encode(FIRST_TWO, removed, kv.AllBlocksCleared(), ts=5.0))
    assert batch.ts == 5.0 and batch.data_parallel_rank == 0
    first, second, third = batch.events
    assert isinstance(first, BlocksStored) and first.plain
    assert first.block_hashes == tuple(H[:2]) and first.parent_block_hash is None
    assert first.token_ids == tuple(TOKENS[: 2 * BLOCK]) and first.block_size == BLOCK
    assert isinstance(second, BlocksRemoved) and second.block_hashes == (H[2],)
    assert isinstance(third, AllCleared)


def test_stored_chains_are_indexed_by_token_content() -> None:
    index = PreciseIndex(capacity_blocks=100, block_tokens=BLOCK, staleness_s=10)
    index.apply("r0", decode_event_batch(encode(FIRST_TWO)))
    index.apply("r0", decode_event_batch(encode(THIRD)))
    keys = token_block_keys(TOKENS, BLOCK)
    match = index.index.longest_match(keys)
    assert (match.blocks, set(match.replicas)) == (3, {"r0"})

    index.apply(
        "r0", decode_event_batch(encode(kv.BlockRemoved(block_hashes=[H[2]], medium="GPU")))
    )
    assert index.index.longest_match(keys).blocks == 2
    index.apply("r0", decode_event_batch(encode(kv.AllBlocksCleared())))
    assert index.index.longest_match(keys).blocks == 0


def test_integer_block_hashes_work_too() -> None:
    index = PreciseIndex(capacity_blocks=100, block_tokens=BLOCK, staleness_s=10)
    index.apply("r1", decode_event_batch(encode(stored([11, 12], None, TOKENS[: 2 * BLOCK]))))
    index.apply("r1", decode_event_batch(encode(kv.BlockRemoved(block_hashes=[12], medium="GPU"))))
    assert index.index.matched_blocks("r1", token_block_keys(TOKENS, BLOCK)) == 1


def test_blocks_that_cannot_be_keyed_are_skipped() -> None:
    index = PreciseIndex(capacity_blocks=100, block_tokens=BLOCK, staleness_s=10)
    orphan = stored(H[3:4], b"unknown-parent", TOKENS[:BLOCK])
    lora = kv.BlockStored(
        block_hashes=[H[0]],
        parent_block_hash=None,
        token_ids=TOKENS[:BLOCK],
        block_size=BLOCK,
        lora_id=3,
        medium="GPU",
        lora_name="adapter",
    )
    offloaded = kv.BlockStored(
        block_hashes=[H[1]],
        parent_block_hash=None,
        token_ids=TOKENS[:BLOCK],
        block_size=BLOCK,
        lora_id=None,
        medium="CPU",
        lora_name=None,
    )
    index.apply("r0", decode_event_batch(encode(orphan, lora, offloaded)))
    assert index.skipped_blocks == 3
    assert len(index.index) == 0


def fake_tokenizer() -> CachedTokenizer:
    """Token ids are characters, so a prompt's tokens are known without a model."""
    return CachedTokenizer(lambda text: [ord(c) for c in text], capacity=16)


TEXT = "".join(chr(c) for c in TOKENS)


def precise_router(make_router: MakeRouter, **overrides: Any) -> CacheAwareRouter:
    router = make_router(index="precise", kv_events_staleness_s=5.0, **overrides)
    router.tokenizer = fake_tokenizer()
    return router


def test_core_routes_by_the_event_index(make_router: MakeRouter) -> None:
    router = precise_router(make_router)
    for replica in ("r0", "r1", "r2"):
        router.apply_kv_events(replica, decode_event_batch(encode()))  # subscribed, idle
    router.apply_kv_events("r2", decode_event_batch(encode(FIRST_TWO, THIRD)))
    decision = router.choose(("r0", "r1", "r2"), router.prepare(PromptInput(TEXT), "a"))
    assert (decision.chosen, decision.reason, decision.index) == ("r2", "cache_hit", "precise")
    assert decision.matched_tokens == 3 * BLOCK


def test_tokenizes_each_request_once(make_router: MakeRouter) -> None:
    router = precise_router(make_router)
    tokenizer = router.tokenizer
    assert tokenizer is not None
    prepared = router.prepare(PromptInput(TEXT), "a")
    for _ in range(3):
        router.choose(("r0", "r1", "r2"), router.prepare(PromptInput(TEXT), "a"))
    router.on_routed("a", "r0", prepared)
    router.prepare(PromptInput(TEXT), "b")  # another request, same prompt: LRU hit
    assert tokenizer.calls == 1


def test_falls_back_to_approximate_while_events_are_overdue(
    make_router: MakeRouter, clock: Any
) -> None:
    router = precise_router(make_router)
    for replica in ("r0", "r1", "r2"):
        router.apply_kv_events(replica, decode_event_batch(encode()))
    router.on_routed("a", "r0", router.prepare(PromptInput(TEXT), "a"))  # expects new blocks
    clock.now += 6  # no BlockStored from r0 for longer than the staleness timeout
    decision = router.choose(("r0", "r1", "r2"), router.prepare(PromptInput(TEXT + "?"), "b"))
    assert (decision.index, decision.chosen, decision.reason) == ("approximate", "r0", "cache_hit")

    router.apply_kv_events("r0", decode_event_batch(encode(FIRST_TWO, THIRD)))
    clock.now += 1  # past the freshness memo
    decision = router.choose(("r0", "r1", "r2"), router.prepare(PromptInput(TEXT + "!"), "c"))
    assert (decision.index, decision.chosen) == ("precise", "r0")


def test_unsubscribed_replicas_keep_routing_approximate(make_router: MakeRouter) -> None:
    router = precise_router(make_router)
    router.apply_kv_events("r0", decode_event_batch(encode(FIRST_TWO)))
    decision = router.choose(("r0", "r1", "r2"), router.prepare(PromptInput(TEXT), "a"))
    assert decision.index == "approximate"


def test_zmq_subscriber_feeds_the_core(make_router: MakeRouter, tmp_path: Path) -> None:
    subscriber_module = pytest.importorskip("rayfleet.router.kv_subscriber")
    endpoint = f"ipc://{tmp_path}/kv-events.sock"
    publisher = kv.ZmqEventPublisher(data_parallel_rank=0, endpoint=endpoint)
    subscriber = subscriber_module.KvEventSubscriber(poll_ms=20)
    router = precise_router(make_router)
    router.subscriber = subscriber
    try:
        stats = {"kv_event_metadata": {"endpoint": endpoint, "block_size": BLOCK}}
        router.sync_replicas({"r0": stats, "r1": stats, "r2": None})
        keys = token_block_keys(TOKENS, BLOCK)
        deadline = time.monotonic() + 20
        # PUB/SUB drops messages until the subscription reaches the publisher: resend.
        while router.precise is not None and not router.precise.index.holds("r0", keys[0]):
            assert time.monotonic() < deadline, "no KV event arrived over ZMQ"
            publisher.publish(kv.KVEventBatch(ts=time.time(), events=[FIRST_TWO]))
            time.sleep(0.05)
            router.drain_kv_events()
        assert router.precise.index.matched_blocks("r0", keys) == 2
    finally:
        publisher.shutdown()
        subscriber.close()
