"""A rendered serve config runs on a plain `ray start --head` through Ray's own `serve deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rayfleet.platform import local

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def test_render_then_serve_deploy(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    subprocess.run(
        [
            str(BIN / "rayfleet"),
            "render",
            str(REPO / "examples/cpu-tiny.yaml"),
            "--serve-config",
            str(config),
        ],
        check=True,
    )
    # `ray start --head` turns token auth on; Ray's CLI clients only send the token
    # when told the mode (see local.ray_auth_headers).
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--disable-usage-stats"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        deploy = subprocess.run(
            [str(BIN / "serve"), "deploy", str(config)], capture_output=True, text=True, env=env
        )
        assert deploy.returncode == 0, deploy.stderr
        local.wait_for_answer("http://127.0.0.1:8000/v1/models", 600, poll_s=2)
        models = httpx.get("http://127.0.0.1:8000/v1/models", timeout=5).json()["data"]
        assert [m["id"] for m in models] == ["tiny-llama"]
        completion = httpx.post(
            "http://127.0.0.1:8000/v1/completions",
            json={"model": "tiny-llama", "prompt": "hello", "max_tokens": 5},
            timeout=60,
        ).json()
        assert completion["usage"]["completion_tokens"] == 5
        bad = httpx.post("http://127.0.0.1:8000/v1/completions", content=b"{", timeout=30)
        assert bad.status_code == 400 and "error" in bad.json()
    finally:
        subprocess.run([str(BIN / "rayfleet"), "down"], capture_output=True)
