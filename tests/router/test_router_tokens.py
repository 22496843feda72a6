"""The cached tokenizer behind the precise index."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayfleet.router.prompt import PromptInput
from rayfleet.router.tokens import CachedTokenizer


def counting_tokenizer(capacity: int) -> tuple[CachedTokenizer, list[str]]:
    seen: list[str] = []

    def encode(text: str) -> list[int]:
        seen.append(text)
        return [len(word) for word in text.split()]

    return CachedTokenizer(encode, capacity=capacity), seen


def test_each_prompt_is_tokenized_once() -> None:
    tokenizer, seen = counting_tokenizer(capacity=8)
    for _ in range(3):
        assert tokenizer.encode(PromptInput("a bb ccc")) == (1, 2, 3)
    assert seen == ["a bb ccc"]


def test_the_cache_is_bounded() -> None:
    tokenizer, seen = counting_tokenizer(capacity=2)
    for text in ("one", "two", "three", "one"):
        tokenizer.encode(PromptInput(text))
    assert seen == ["one", "two", "three", "one"]


def test_known_token_ids_skip_the_tokenizer() -> None:
    tokenizer, seen = counting_tokenizer(capacity=2)
    assert tokenizer.encode(PromptInput("", token_ids=(4, 5))) == (4, 5)
    assert seen == []


def test_chat_without_a_chat_encoder_is_not_tokenized() -> None:
    tokenizer, _ = counting_tokenizer(capacity=2)
    assert tokenizer.encode(PromptInput("x", messages=({"role": "user", "content": "x"},))) is None


def test_hugging_face_tokenizer_with_chat_template(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, "<|user|>": 1, "hello": 2, "world": 3, "<|assistant|>": 4}
    model = tokenizers.models.WordLevel(vocab, unk_token="[UNK]")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fast.save_pretrained(tmp_path)

    tokenizer = CachedTokenizer.from_pretrained(str(tmp_path))
    assert tokenizer.encode(PromptInput("hello world")) == (2, 3)
    chat = PromptInput("ignored", messages=({"role": "user", "content": "hello"},))
    assert tokenizer.encode(chat) == (1, 2, 4)
