"""Workloads: exact token counts with the tiny tokenizer, determinism, shapes."""

from __future__ import annotations

import json
import random

import pytest

from rayfleet.bench.workloads import (
    WorkloadError,
    build_workload,
    parse_length,
    parse_params,
)


def prompt_tokens(maker, spec) -> int:
    if spec.prompt is not None:
        return maker.count(spec.prompt)
    return sum(maker.count(m["content"]) for m in spec.messages)


@pytest.mark.parametrize("tokens", [0, 1, 7, 128, 1000])
def test_text_has_exact_token_count(maker, tokens):
    rng = random.Random(tokens)
    assert maker.count(maker.text(rng, tokens)) == tokens


def test_extend_is_exact_against_the_whole_text(maker):
    rng = random.Random(1)
    head = maker.text(rng, 50)
    tail = maker.extend(rng, head, 30)
    assert maker.count(head + tail) == 80
    assert maker.ids(head + tail)[:50] == maker.ids(head)  # the prefix survives intact


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("synthetic", {"input_len": "normal:200:50", "output_len": "uniform:4:16"}),
        ("shared-prefix", {"num_groups": "3", "num_prompts_per_group": "4"}),
        ("multi-turn", {"system_prompt_len": "16", "turns": "3", "num_sessions": "2"}),
        ("pd-mix", {"long_fraction": "0.5", "long_input_len": "600", "short_input_len": "20"}),
    ],
)
def test_generated_workloads_are_exact_and_deterministic(maker, name, params):
    specs = build_workload(name, params, maker, seed=5).take(24)
    again = build_workload(name, params, maker, seed=5).take(24)
    other = build_workload(name, params, maker, seed=6).take(24)
    assert specs == again
    assert specs != other
    assert all(prompt_tokens(maker, s) == s.input_tokens for s in specs)


def test_synthetic_lengths_follow_the_distribution(maker):
    specs = build_workload(
        "synthetic", {"input_len": "uniform:10:20", "output_len": "8"}, maker
    ).take(50)
    assert {s.max_tokens for s in specs} == {8}
    assert all(10 <= s.input_tokens <= 20 for s in specs)
    assert len({s.input_tokens for s in specs}) > 3
    assert all(s.ignore_eos for s in specs)


def test_shared_prefix_groups_share_exact_system_prompts(maker):
    params = {
        "num_groups": "2",
        "num_prompts_per_group": "3",
        "system_prompt_len": "40",
        "question_len": "10",
        "output_len": "5",
    }
    specs = build_workload("shared-prefix", params, maker, seed=1).take(12)
    assert specs[:6] == specs[6:]  # the G×P prompts repeat
    by_group: dict[str, set] = {}
    for spec in specs[:6]:
        assert spec.input_tokens == 50 and spec.max_tokens == 5
        by_group.setdefault(spec.group, set()).add(tuple(maker.ids(spec.prompt)[:40]))
    assert len(by_group) == 2 and all(len(prefixes) == 1 for prefixes in by_group.values())
    assert len({spec.prompt for spec in specs[:6]}) == 6


def test_multi_turn_resends_the_conversation(maker):
    params = {"num_sessions": "2", "turns": "3", "user_len": "5", "output_len": "4"}
    specs = build_workload("multi-turn", params, maker).take(6)
    first = [s for s in specs if s.session_id == "session-0"]
    assert [s.turn for s in first] == [0, 1, 2]
    assert [len(s.messages) for s in first] == [1, 3, 5]
    assert first[2].messages[:3] == first[1].messages
    assert [m["role"] for m in first[2].messages] == ["user", "assistant"] * 2 + ["user"]
    assert maker.count(first[2].messages[1]["content"]) == 4


def test_multi_turn_sessions_end_and_are_replaced_at_different_times(maker):
    params = {"num_sessions": "3", "turns": "uniform:1:4", "user_len": "3", "output_len": "2"}
    specs = build_workload("multi-turn", params, maker, seed=1).take(40)
    turns_by_session: dict[str, list[int]] = {}
    for spec in specs:
        turns_by_session.setdefault(spec.session_id, []).append(spec.turn)
    assert all(t == list(range(len(t))) for t in turns_by_session.values())
    still_open = {s.session_id for s in specs[-3:]}  # one per slot: may be cut off
    finished = [t for session, t in turns_by_session.items() if session not in still_open]
    lengths = {len(t) for t in finished}
    assert len(lengths) > 1 and min(lengths) >= 1 and max(lengths) <= 4
    # rotation over 3 open slots: every window of 3 consecutive requests is 3 sessions
    assert all(len({s.session_id for s in specs[i : i + 3]}) == 3 for i in range(0, 39, 3))


def test_multi_turn_sessions_share_the_apps_system_prompts(maker):
    params = {"num_sessions": "6", "turns": "2", "system_prompt_len": "8", "user_len": "3"}
    first_turns = build_workload("multi-turn", {**params, "num_system_prompts": "2"}, maker)
    systems = [s.messages[0]["content"] for s in first_turns.take(6)]
    assert systems[0::2] == [systems[0]] * 3 and systems[1::2] == [systems[1]] * 3
    assert systems[0] != systems[1]
    own = build_workload("multi-turn", params, maker).take(6)
    assert len({s.messages[0]["content"] for s in own}) == 6


def test_shared_system_prompts_need_a_length(maker):
    with pytest.raises(WorkloadError, match="num_system_prompts needs system_prompt_len"):
        build_workload("multi-turn", {"num_system_prompts": "2"}, maker)


def test_pd_mix_ratio(maker):
    params = {"long_fraction": "0.25", "long_input_len": "100", "short_input_len": "10"}
    specs = build_workload("pd-mix", params, maker, seed=2).take(400)
    long = [s for s in specs if s.group == "long"]
    assert 0.18 < len(long) / len(specs) < 0.32
    assert {s.input_tokens for s in long} == {100}


def test_dataset_rows(maker, tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [
        {"prompt": " hello world", "max_tokens": 3},
        {"messages": [{"role": "user", "content": " the model"}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    specs = build_workload("dataset", {"path": str(path), "shuffle": "false"}, maker).take(4)
    assert specs[0].prompt == " hello world" and specs[0].max_tokens == 3
    assert specs[1].messages[0]["content"] == " the model" and specs[1].max_tokens == 128
    assert specs[2:] == specs[:2]
    assert specs[0].input_tokens == maker.count(" hello world")


def test_bad_parameters_are_named(maker, tmp_path):
    with pytest.raises(WorkloadError, match="bogus"):
        build_workload("synthetic", {"bogus": "1"}, maker)
    with pytest.raises(WorkloadError, match="unknown workload"):
        build_workload("nope", {}, maker)
    with pytest.raises(WorkloadError, match="input_len"):
        build_workload("synthetic", {"input_len": "gauss:1"}, maker)
    with pytest.raises(WorkloadError, match="key=value"):
        parse_params(["novalue"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="prompt or messages"):
        build_workload("dataset", {"path": str(bad)}, maker).take(1)


def test_length_parsing():
    assert str(parse_length(5)) == "5"
    assert str(parse_length("uniform:2:9")) == "uniform:2:9"
    normal = parse_length("normal:100:10")
    assert (normal.low, normal.high) == (1, 200)
    assert str(parse_length(str(normal))) == str(normal)
    samples = [normal.sample(random.Random(i)) for i in range(200)]
    assert 95 < sum(samples) / len(samples) < 105
    with pytest.raises(ValueError):
        parse_length("uniform:9:2")
    assert parse_params(["input-len=4"]) == {"input_len": "4"}
