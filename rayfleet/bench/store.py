"""Profile store: every benchmark run with what was served, in SQLite.

One row per run (what was served, the workload, the summary) and one per stage
(a sweep's load levels, with key metrics as columns), so later recommendations
can ask e.g. "the highest throughput of model M on accelerator A within an SLO".
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

DB_NAME = "profiles.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    run_dir TEXT,
    target TEXT,
    model TEXT,
    spec_hash TEXT,
    backend TEXT,
    accelerator TEXT,
    pools TEXT,
    router_policy TEXT,
    rayfleet_version TEXT,
    workload TEXT,
    workload_params TEXT,
    load TEXT,
    served TEXT,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_model ON runs (model, accelerator, backend);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    stage INTEGER NOT NULL,
    load REAL,
    saturated TEXT,
    requests_ok INTEGER,
    requests_failed INTEGER,
    requests_per_s REAL,
    output_tokens_per_s REAL,
    ttft_p50_s REAL,
    ttft_p90_s REAL,
    tpot_p50_s REAL,
    tpot_p90_s REAL,
    e2e_p90_s REAL,
    goodput_fraction REAL,
    prefix_cache_hit_rate REAL,
    summary TEXT,
    PRIMARY KEY (run_id, stage)
);
"""


@dataclass(frozen=True)
class RunFilter:
    """Equality filters on what was served; None matches anything."""

    model: str | None = None
    accelerator: str | None = None
    backend: str | None = None
    spec_hash: str | None = None
    workload: str | None = None
    router_policy: str | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        used = {k: v for k, v in vars(self).items() if v is not None}
        return [f"runs.{k} = ?" for k in used], list(used.values())


def default_data_dir() -> Path:
    if env := os.environ.get("RAYFLEET_DATA_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "rayfleet"


def rayfleet_version() -> str:
    try:
        return metadata.version("rayfleet")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Served:
    """What answered the benchmark: from a spec file, or from the server's metadata."""

    model: str
    spec_hash: str
    backend: str = "unknown"
    accelerator: str = "unknown"
    pools: dict[str, Any] = field(default_factory=dict)
    router_policy: str = "unknown"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunEntry:
    run_id: str
    created_at: str  # ISO 8601, UTC
    run_dir: str
    target: str
    served: Served
    workload: dict[str, Any]  # name, seed and parameters
    load: dict[str, Any]  # arrival, rates or concurrencies, duration, bounds
    summary: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)  # per-stage summaries
    rayfleet_version: str = field(default_factory=rayfleet_version)


def _stage_row(run_id: str, stage: dict[str, Any]) -> tuple[Any, ...]:
    def pick(metric: str, stat: str) -> float | None:
        return (stage.get(metric) or {}).get(stat)

    cache = stage.get("prefix_cache") or {}
    return (
        run_id,
        stage.get("stage", 0),
        stage.get("load"),
        stage.get("saturated"),
        stage.get("requests_ok"),
        stage.get("requests_failed"),
        stage.get("requests_per_s"),
        stage.get("output_tokens_per_s"),
        pick("ttft_s", "p50"),
        pick("ttft_s", "p90"),
        pick("tpot_s", "p50"),
        pick("tpot_s", "p90"),
        pick("e2e_s", "p90"),
        (stage.get("goodput") or {}).get("fraction"),
        cache.get("hit_rate"),
        json.dumps(stage),
    )


class ProfileStore:
    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.path = self.data_dir / DB_NAME
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            with db:  # one transaction: committed on success, rolled back on error
                yield db

    def save(self, entry: RunEntry) -> None:
        served = entry.served
        row = (
            entry.run_id,
            entry.created_at,
            entry.run_dir,
            entry.target,
            served.model,
            served.spec_hash,
            served.backend,
            served.accelerator,
            json.dumps(served.pools),
            served.router_policy,
            entry.rayfleet_version,
            entry.workload.get("name"),
            json.dumps(entry.workload),
            json.dumps(entry.load),
            json.dumps(served.details),
            json.dumps(entry.summary),
        )
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (entry.run_id,))
            db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(row))})", row)
            db.executemany(
                "INSERT INTO stages VALUES (" + ", ".join("?" * 16) + ")",
                [_stage_row(entry.run_id, s) for s in entry.stages],
            )

    def get(self, run_id: str) -> RunEntry | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return self._entry(db, row) if row else None

    def runs(self, where: RunFilter | None = None, limit: int | None = None) -> list[RunEntry]:
        """Runs, newest first."""
        clauses, values = (where or RunFilter()).where()
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += " ORDER BY created_at DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as db:
            return [self._entry(db, row) for row in db.execute(sql, values).fetchall()]

    def stages(
        self,
        where: RunFilter | None = None,
        max_ttft_p90_s: float | None = None,
        max_tpot_p90_s: float | None = None,
        include_saturated: bool = False,
    ) -> list[dict[str, Any]]:
        """Stage points (load, throughput, latency) joined with what was served,
        highest output tokens/s first."""
        clauses, values = (where or RunFilter()).where()
        if max_ttft_p90_s is not None:
            clauses.append("stages.ttft_p90_s <= ?")
            values.append(max_ttft_p90_s)
        if max_tpot_p90_s is not None:
            clauses.append("stages.tpot_p90_s <= ?")
            values.append(max_tpot_p90_s)
        if not include_saturated:
            clauses.append("stages.saturated IS NULL")
        sql = (
            "SELECT stages.*, runs.model, runs.accelerator, runs.backend, runs.workload,"
            " runs.router_policy, runs.spec_hash, runs.created_at FROM stages"
            " JOIN runs USING (run_id)"
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + " ORDER BY stages.output_tokens_per_s DESC"
        )
        with self._connect() as db:
            rows = db.execute(sql, values).fetchall()
        return [{k: v for k, v in dict(row).items() if k != "summary"} for row in rows]

    def best_stage(
        self,
        where: RunFilter | None = None,
        max_ttft_p90_s: float | None = None,
        max_tpot_p90_s: float | None = None,
    ) -> dict[str, Any] | None:
        """The unsaturated stage with the most output tokens/s within the latency bounds."""
        found = self.stages(where, max_ttft_p90_s, max_tpot_p90_s)
        return found[0] if found else None

    def delete(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    @staticmethod
    def _entry(db: sqlite3.Connection, row: sqlite3.Row) -> RunEntry:
        stage_rows = db.execute(
            "SELECT summary FROM stages WHERE run_id = ? ORDER BY stage", (row["run_id"],)
        ).fetchall()
        served = Served(
            model=row["model"],
            spec_hash=row["spec_hash"],
            backend=row["backend"],
            accelerator=row["accelerator"],
            pools=json.loads(row["pools"]),
            router_policy=row["router_policy"],
            details=json.loads(row["served"]),
        )
        return RunEntry(
            run_id=row["run_id"],
            created_at=row["created_at"],
            run_dir=row["run_dir"],
            target=row["target"],
            served=served,
            workload=json.loads(row["workload_params"]),
            load=json.loads(row["load"]),
            summary=json.loads(row["summary"]),
            stages=[json.loads(s["summary"]) for s in stage_rows],
            rayfleet_version=row["rayfleet_version"],
        )
