"""Seeded, tokenizer-aware workloads: each yields an endless stream of RequestSpecs.

Input lengths count prompt tokens without special or chat-template tokens, so they
are exact for completions; the server's `usage` reports what it really counted.
Parameter names of `shared-prefix` follow inference-perf's shared_prefix data type.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from rayfleet.bench.records import RequestSpec
from rayfleet.bench.text import TextMaker


class LengthDist(BaseModel):
    """A token-length distribution: fixed N, uniform:LOW:HIGH, normal:MEAN:STD[:LOW:HIGH]."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["fixed", "uniform", "normal"]
    mean: float
    low: int
    high: int
    std: float = 0.0

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return self.low
        if self.kind == "uniform":
            return rng.randint(self.low, self.high)
        return min(self.high, max(self.low, round(rng.gauss(self.mean, self.std))))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(self.low)
        if self.kind == "uniform":
            return f"uniform:{self.low}:{self.high}"
        return f"normal:{self.mean:g}:{self.std:g}:{self.low}:{self.high}"


def parse_length(value: Any) -> LengthDist:
    if isinstance(value, LengthDist):
        return value
    text = str(value).strip()
    kind, _, rest = text.partition(":")
    try:
        numbers = [float(x) for x in rest.split(":")] if rest else []
        if not rest and kind.isdigit():
            n = int(kind)
            return _checked(LengthDist(kind="fixed", mean=n, low=n, high=n))
        if kind == "uniform" and len(numbers) == 2:
            low, high = int(numbers[0]), int(numbers[1])
            return _checked(LengthDist(kind="uniform", mean=(low + high) / 2, low=low, high=high))
        if kind == "normal" and len(numbers) in (2, 4):
            mean, std = numbers[0], numbers[1]
            bounds = numbers[2:] if len(numbers) == 4 else [1, 2 * mean]  # clip at 0..2×mean
            low, high = max(1, int(bounds[0])), int(bounds[1])
            return _checked(LengthDist(kind="normal", mean=mean, std=std, low=low, high=high))
    except ValueError:
        pass
    raise ValueError(f"bad length {text!r}: use N, uniform:LOW:HIGH or normal:MEAN:STD[:LOW:HIGH]")


def _checked(dist: LengthDist) -> LengthDist:
    if dist.low < 1 or dist.high < dist.low:
        raise ValueError(f"length bounds must satisfy 1 <= low <= high, got {dist}")
    return dist


Length = Annotated[LengthDist, BeforeValidator(parse_length), PlainSerializer(str)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ignore_eos: bool = Field(True, description="Ask the server to always produce max_tokens.")


class SyntheticParams(_Params):
    input_len: Length = parse_length(256)
    output_len: Length = parse_length(64)


class SharedPrefixParams(_Params):
    num_groups: int = Field(4, ge=1)
    num_prompts_per_group: int = Field(8, ge=1)
    system_prompt_len: int = Field(256, ge=0)
    question_len: Length = parse_length(64)
    output_len: Length = parse_length(64)


class MultiTurnParams(_Params):
    num_sessions: int = Field(8, ge=1, description="Sessions open at once.")
    turns: Length = Field(parse_length(4), description="Turns of each session.")
    system_prompt_len: int = Field(0, ge=0)
    num_system_prompts: int = Field(
        0,
        ge=0,
        description="Distinct system prompts, shared by the sessions in turn as the users of "
        "one app share its prompt; 0 gives every session its own.",
    )
    user_len: Length = parse_length(64)
    output_len: Length = parse_length(64)

    @model_validator(mode="after")
    def _shared_prompts_need_a_length(self) -> MultiTurnParams:
        if self.num_system_prompts and not self.system_prompt_len:
            raise ValueError("num_system_prompts needs system_prompt_len > 0")
        return self


class PdMixParams(_Params):
    long_fraction: float = Field(0.2, ge=0, le=1, description="Share of long prompts.")
    long_input_len: Length = parse_length(1024)
    short_input_len: Length = parse_length(64)
    output_len: Length = parse_length(64)


class DatasetParams(_Params):
    path: Path
    output_len: Length = Field(parse_length(128), description="Unless a row sets max_tokens.")
    shuffle: bool = True


def synthetic(p: SyntheticParams, maker: TextMaker, rng: random.Random) -> Iterator[RequestSpec]:
    while True:
        n = p.input_len.sample(rng)
        yield RequestSpec(
            prompt=maker.text(rng, n),
            max_tokens=p.output_len.sample(rng),
            input_tokens=n,
            ignore_eos=p.ignore_eos,
        )


def shared_prefix(
    p: SharedPrefixParams, maker: TextMaker, rng: random.Random
) -> Iterator[RequestSpec]:
    """G groups × P prompts, each = the group's system prompt + its own question.

    The G×P prompts are shuffled once and then repeated, as inference-perf does.
    """
    specs = []
    for group in range(p.num_groups):
        system = maker.text(rng, p.system_prompt_len)
        for _ in range(p.num_prompts_per_group):
            n = p.question_len.sample(rng)
            specs.append(
                RequestSpec(
                    prompt=system + maker.extend(rng, system, n),
                    max_tokens=p.output_len.sample(rng),
                    input_tokens=p.system_prompt_len + n,
                    ignore_eos=p.ignore_eos,
                    group=f"group-{group}",
                )
            )
    rng.shuffle(specs)
    return itertools.cycle(specs)


def multi_turn(p: MultiTurnParams, maker: TextMaker, rng: random.Random) -> Iterator[RequestSpec]:
    """Chat sessions whose every turn resends the conversation so far.

    num_sessions are open at once and take turns in rotation. Each has its own number
    of turns; one that ends is replaced by a new session, so sessions start and end at
    different times, as in live chat traffic. Assistant replies are made-up texts of
    output_len tokens, so the stream stays pure.
    """
    opened = itertools.count()
    length = p.system_prompt_len
    shared = [maker.text(rng, length) for _ in range(p.num_system_prompts if length else 0)]

    def open_session() -> Iterator[RequestSpec]:
        index = next(opened)
        if shared:
            system_prompt = shared[index % len(shared)]
        else:
            system_prompt = maker.text(rng, length) if length else ""
        conversation = _conversation(p, maker, rng, system_prompt)  # drawn now: RNG order
        return (
            RequestSpec(
                messages=messages,
                max_tokens=reply_len,
                input_tokens=sum(maker.count(m["content"]) for m in messages),
                ignore_eos=p.ignore_eos,
                session_id=f"session-{index}",
                turn=turn,
            )
            for turn, (messages, reply_len) in enumerate(conversation)
        )

    slots = [open_session() for _ in range(p.num_sessions)]
    while True:
        for slot in range(p.num_sessions):
            spec = next(slots[slot], None)
            if spec is None:  # the session ended: a new one takes its place
                slots[slot] = open_session()
                spec = next(slots[slot])
            yield spec


def _conversation(
    p: MultiTurnParams, maker: TextMaker, rng: random.Random, system_prompt: str
) -> list[tuple[tuple[dict[str, str], ...], int]]:
    """Per turn: the messages sent, and the reply length asked for."""
    history: list[dict[str, str]] = []
    if p.system_prompt_len:
        history.append({"role": "system", "content": system_prompt})
    turns = []
    for _ in range(p.turns.sample(rng)):
        history.append({"role": "user", "content": maker.text(rng, p.user_len.sample(rng))})
        reply_len = p.output_len.sample(rng)
        turns.append((tuple(history), reply_len))
        history.append({"role": "assistant", "content": maker.text(rng, reply_len)})
    return turns


def pd_mix(p: PdMixParams, maker: TextMaker, rng: random.Random) -> Iterator[RequestSpec]:
    """Unique long and short prompts mixed at random, long_fraction of them long."""
    while True:
        long = rng.random() < p.long_fraction
        n = (p.long_input_len if long else p.short_input_len).sample(rng)
        yield RequestSpec(
            prompt=maker.text(rng, n),
            max_tokens=p.output_len.sample(rng),
            input_tokens=n,
            ignore_eos=p.ignore_eos,
            group="long" if long else "short",
        )


def dataset(p: DatasetParams, maker: TextMaker, rng: random.Random) -> Iterator[RequestSpec]:
    """Rows of a JSONL file ({"prompt"} or {"messages"}, optional max_tokens), repeated."""
    rows = _read_jsonl(p.path)
    for _ in itertools.count():
        order = list(range(len(rows)))
        if p.shuffle:
            rng.shuffle(order)
        for i in order:
            yield _dataset_spec(rows[i], p, maker, rng)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or ("prompt" in row) == ("messages" in row):
            raise ValueError(f"{path}:{number}: a row needs exactly one of prompt or messages")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no rows")
    return rows


def _dataset_spec(
    row: dict[str, Any], p: DatasetParams, maker: TextMaker, rng: random.Random
) -> RequestSpec:
    max_tokens = int(row.get("max_tokens") or p.output_len.sample(rng))
    if "prompt" in row:
        prompt = str(row["prompt"])
        return RequestSpec(
            prompt=prompt,
            max_tokens=max_tokens,
            input_tokens=maker.count(prompt),
            ignore_eos=p.ignore_eos,
        )
    messages = tuple(
        {"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]
    )
    return RequestSpec(
        messages=messages,
        max_tokens=max_tokens,
        input_tokens=sum(maker.count(m["content"]) for m in messages),
        ignore_eos=p.ignore_eos,
    )


Generator = Callable[[Any, TextMaker, random.Random], Iterator[RequestSpec]]
WORKLOADS: dict[str, tuple[type[_Params], Generator]] = {
    "synthetic": (SyntheticParams, synthetic),
    "shared-prefix": (SharedPrefixParams, shared_prefix),
    "multi-turn": (MultiTurnParams, multi_turn),
    "pd-mix": (PdMixParams, pd_mix),
    "dataset": (DatasetParams, dataset),
}


@dataclass(frozen=True)
class Workload:
    name: str
    params: _Params
    maker: TextMaker
    seed: int

    def requests(self) -> Iterator[RequestSpec]:
        """A fresh, endless stream; the same seed always gives the same requests."""
        _, generate = WORKLOADS[self.name]
        return generate(self.params, self.maker, random.Random(self.seed))

    def take(self, count: int) -> list[RequestSpec]:
        return list(itertools.islice(self.requests(), count))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, **self.params.model_dump(mode="json")}


class WorkloadError(ValueError):
    """Unknown workload or bad parameters; the message names them."""


def build_workload(
    name: str, params: Mapping[str, Any], maker: TextMaker, seed: int = 0
) -> Workload:
    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    model, _ = WORKLOADS[name]
    try:
        parsed = model.model_validate(dict(params))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise WorkloadError(f"bad {name} parameters: {problems}") from None
    return Workload(name=name, params=parsed, maker=maker, seed=seed)


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings (from the command line) to a mapping; dashes become underscores."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise WorkloadError(f"workload parameter {pair!r} is not key=value")
        params[key.strip().replace("-", "_")] = value.strip()
    return params
