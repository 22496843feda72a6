"""Chained block keys and the per-replica LRU block index."""

from __future__ import annotations

import pytest

from rayfleet.router.hashing import chain_token_block, text_block_keys, token_block_keys
from rayfleet.router.index import BlockIndex


def test_text_keys_cover_full_blocks_only() -> None:
    assert len(text_block_keys("a" * 99, 10)) == 9
    assert text_block_keys("short", 10) == []


def test_keys_are_chained_on_the_whole_prefix() -> None:
    shared = "x" * 20
    one = text_block_keys(shared + "A" * 10 + "tail" * 5, 10)
    two = text_block_keys(shared + "B" * 10 + "tail" * 5, 10)
    assert one[:2] == two[:2]
    # Same later chunks, different history: every key after the divergence differs.
    assert all(a != b for a, b in zip(one[2:], two[2:], strict=True))


def test_same_chunk_at_another_position_gets_another_key() -> None:
    keys = text_block_keys("abcd" * 3, 4)
    assert len(set(keys)) == 3


def test_token_keys_match_incremental_chaining() -> None:
    tokens = list(range(10))
    keys = token_block_keys(tokens, 4)
    assert keys == [
        chain_token_block(None, tokens[:4]),
        chain_token_block(chain_token_block(None, tokens[:4]), tokens[4:8]),
    ]


def test_longest_match_picks_the_deepest_holders() -> None:
    index = BlockIndex(capacity_blocks=100)
    index.insert_chain("a", [1, 2, 3])
    index.insert_chain("b", [1, 2])
    index.insert_chain("c", [9])
    match = index.longest_match([1, 2, 3, 4])
    assert (match.blocks, set(match.replicas)) == (3, {"a"})
    assert index.longest_match([1, 2, 7]).replicas == {"a", "b"}
    assert index.longest_match([5]).blocks == 0


def test_longest_match_only_counts_candidates() -> None:
    index = BlockIndex(capacity_blocks=100)
    index.insert_chain("a", [1, 2, 3])
    index.insert_chain("b", [1])
    match = index.longest_match([1, 2, 3], candidates=frozenset({"b", "c"}))
    assert (match.blocks, set(match.replicas)) == (1, {"b"})
    assert index.longest_match([1, 2, 3], candidates=frozenset({"c"})).blocks == 0


def test_lru_evicts_at_capacity_leaves_first() -> None:
    index = BlockIndex(capacity_blocks=4)
    index.insert_chain("a", [1, 2, 3])
    index.insert_chain("a", [7, 8])
    assert index.replica_blocks("a") == 4
    # Chain [1,2,3] was touched tail first, so its leaf 3 is the oldest block.
    assert not index.holds("a", 3)
    assert index.matched_blocks("a", [1, 2, 3]) == 2
    assert index.longest_match([1, 2, 3]).blocks == 2


def test_reinserting_refreshes_recency() -> None:
    index = BlockIndex(capacity_blocks=3)
    index.insert_chain("a", [1])
    index.insert_chain("a", [2])
    index.insert_chain("a", [1])
    index.insert_chain("a", [3, 4])
    assert index.holds("a", 1) and not index.holds("a", 2)


def test_eviction_is_per_replica() -> None:
    index = BlockIndex(capacity_blocks=2)
    index.insert_chain("a", [1, 2])
    index.insert_chain("b", [1, 2])
    index.insert_chain("b", [5, 6])
    assert index.matched_blocks("a", [1, 2]) == 2
    assert index.longest_match([1, 2]).replicas == {"a"}


def test_removing_blocks_and_replicas_cleans_the_inverted_index() -> None:
    index = BlockIndex(capacity_blocks=10)
    index.insert_chain("a", [1, 2])
    index.insert_chain("b", [1])
    index.remove_block("a", 2)
    assert index.longest_match([1, 2]).replicas == {"a", "b"}
    index.clear_replica("a")
    assert index.longest_match([1]).replicas == {"b"}
    index.remove_replica("b")
    assert len(index) == 0
    assert list(index.replicas()) == ["a"]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BlockIndex(0)
