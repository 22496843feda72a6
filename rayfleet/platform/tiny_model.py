"""The embedded tiny model: a random-weight Llama with a locally trained tokenizer.

Models cannot be downloaded everywhere RayFleet runs (CI, air-gapped clusters),
so demos and tests use this one. It is deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

TINY_VERSION = 1
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
_WORDS = [
    "the",
    "a",
    "an",
    "model",
    "token",
    "cache",
    "replica",
    "router",
    "prefill",
    "decode",
    "cluster",
    "node",
    "request",
    "latency",
    "throughput",
    "serve",
    "engine",
    "batch",
    "queue",
    "memory",
    "block",
    "prefix",
    "load",
    "pool",
    "ray",
    "kube",
    "tpu",
    "gpu",
    "cpu",
    "slice",
    "host",
    "chip",
    "worker",
    "group",
    "metric",
    "time",
    "first",
    "output",
    "input",
    "answer",
    "question",
    "system",
    "user",
    "assistant",
    "hello",
    "world",
    "please",
    "explain",
    "why",
    "how",
    "what",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "do",
    "does",
    "did",
    "will",
    "would",
    "can",
    "could",
]


def cache_dir() -> Path:
    return Path(os.environ.get("RAYFLEET_CACHE", Path.home() / ".cache" / "rayfleet"))


def _corpus(seed: int, lines: int = 4000) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(4, 24))) for _ in range(lines)]


def make_tiny(directory: str | Path, seed: int = 0, vocab_size: int = 2048) -> Path:
    """Write the tiny model (config, weights, tokenizer, chat template) to ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # vLLM's CPU attention rejects 16
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "rayfleet-tiny.json").write_text(
        json.dumps({"version": TINY_VERSION, "seed": seed}) + "\n"
    )
    return directory


def tiny_path(seed: int = 0) -> Path:
    return cache_dir() / f"tiny-llama-v{TINY_VERSION}-seed{seed}"


def ensure_tiny(seed: int = 0) -> Path:
    """The cached tiny model's folder, made once (safe across concurrent callers)."""
    target = tiny_path(seed)
    marker = target / "rayfleet-tiny.json"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if marker.exists():
            return target
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tiny-"))
        try:
            make_tiny(staging, seed=seed)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
