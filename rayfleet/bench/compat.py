"""Compare a RayFleet run with an inference-perf run of the same workload and server.

Definitions, mapped metric by metric (inference-perf 0.7.0, reportgen/base.py):

- TTFT: both take the first chunk that carries text, minus the send time.
- TPOT: inference-perf takes (last text chunk - first text chunk) / (N - 1); RayFleet's
  ``tpot_s`` takes (end of stream - first text chunk) / (N - 1), the end of stream being
  ``[DONE]``, after the usage chunk. ``tpot_last_chunk`` below recomputes RayFleet's
  records with inference-perf's formula, so the two are compared like with like. N is
  the server's ``usage.completion_tokens`` on both sides when inference-perf runs with
  ``use_server_output_tokens: true`` (otherwise it re-tokenises the streamed text).
- ITL: inference-perf spreads a chunk's tokens over one timestamp (gaps of 0 inside a
  chunk); RayFleet takes gaps between chunks. They differ whenever a chunk holds several
  tokens, so ITL is shown but not judged.

Run: ``python -m rayfleet.bench.compat RAYFLEET_DIR INFERENCE_PERF_DIR``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayfleet.bench.metrics import output_tokens
from rayfleet.bench.records import RequestRecord

TOLERANCE_FRACTION = 0.15
TOLERANCE_FLOOR_S = 0.003
INFERENCE_PERF_SUMMARY = "summary_lifecycle_metrics.json"
# (label, RayFleet summary key, inference-perf latency key, judged by the done-when)
METRICS = (
    ("TTFT p50", "ttft_s", "time_to_first_token", True),
    ("TPOT p50", "tpot_last_chunk_s", "time_per_output_token", True),
    ("TPOT p50 (RayFleet's own, to [DONE])", "tpot_s", "time_per_output_token", False),
    ("normalized TPOT p50", "ntpot_s", "normalized_time_per_output_token", False),
    ("E2E p50", "e2e_s", "request_latency", False),
    ("ITL p50 (definitions differ)", "itl_s", "inter_token_latency", False),
)


class CompatError(ValueError):
    """A report folder lacks what the comparison needs; the message names it."""


@dataclass(frozen=True)
class Row:
    label: str
    rayfleet_s: float | None
    inference_perf_s: float | None
    judged: bool

    @property
    def agrees(self) -> bool | None:
        if self.rayfleet_s is None or self.inference_perf_s is None:
            return None
        return within_tolerance(self.rayfleet_s, self.inference_perf_s)


def within_tolerance(ours: float, reference: float) -> bool:
    """Within 15% of the reference or 3 ms, whichever is larger."""
    allowed = max(TOLERANCE_FRACTION * abs(reference), TOLERANCE_FLOOR_S)
    return abs(ours - reference) <= allowed


def tpot_last_chunk(record: RequestRecord) -> float | None:
    """inference-perf's TPOT: (last text chunk - first text chunk) / (tokens - 1)."""
    out = output_tokens(record)
    if not record.ok or len(record.chunk_s) < 2 or out < 2:
        return None
    return (record.chunk_s[-1] - record.chunk_s[0]) / (out - 1)


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.percentile(present, 50)) if present else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CompatError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CompatError(f"{path} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise CompatError(f"{path} holds {type(data).__name__}, not an object")
    return data


def rayfleet_p50s(run_dir: Path) -> dict[str, float | None]:
    """p50 of each RayFleet metric, plus ``tpot_last_chunk_s`` from requests.jsonl."""
    summary = _read_json(run_dir / "summary.json")
    p50s = {key: (summary.get(key) or {}).get("p50") for _, key, _, _ in METRICS}
    requests = run_dir / "requests.jsonl"
    if not requests.is_file():
        raise CompatError(f"{requests} does not exist: run `rayfleet bench run --per-request`")
    lines = requests.read_text().splitlines()
    records = [RequestRecord.from_json(json.loads(line)) for line in lines if line.strip()]
    p50s["tpot_last_chunk_s"] = median(tpot_last_chunk(r) for r in records)
    return p50s


def inference_perf_p50s(report_dir: Path) -> dict[str, float | None]:
    """Medians of inference-perf's latency metrics from its summary report."""
    summary = _read_json(report_dir / INFERENCE_PERF_SUMMARY)
    latency = (summary.get("successes") or {}).get("latency")
    if not isinstance(latency, dict):
        raise CompatError(f"{report_dir / INFERENCE_PERF_SUMMARY} has no successes.latency")
    return {key: (latency.get(key) or {}).get("median") for _, _, key, _ in METRICS}


def compare(
    rayfleet: dict[str, float | None], inference_perf: dict[str, float | None]
) -> list[Row]:
    return [
        Row(label, rayfleet.get(ours), inference_perf.get(theirs), judged)
        for label, ours, theirs, judged in METRICS
    ]


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.1f}"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| metric | RayFleet ms | inference-perf ms | difference | within 15% or 3 ms |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        diff = "–"
        if row.rayfleet_s is not None and row.inference_perf_s:
            diff = f"{(row.rayfleet_s - row.inference_perf_s) / row.inference_perf_s:+.1%}"
        verdict = {True: "yes", False: "NO", None: "–"}[row.agrees]
        if not row.judged:
            verdict = f"({verdict}, not judged)"
        lines.append(
            f"| {row.label} | {_ms(row.rayfleet_s)} | {_ms(row.inference_perf_s)} "
            f"| {diff} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("rayfleet_dir", type=Path, help="a `rayfleet bench run --out` folder")
    parser.add_argument("inference_perf_dir", type=Path, help="inference-perf's report folder")
    args = parser.parse_args(argv)
    try:
        rows = compare(
            rayfleet_p50s(args.rayfleet_dir), inference_perf_p50s(args.inference_perf_dir)
        )
    except CompatError as error:
        parser.error(str(error))
    print(markdown(rows))
    return 0 if all(row.agrees for row in rows if row.judged) else 1


if __name__ == "__main__":
    raise SystemExit(main())
