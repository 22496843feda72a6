"""The local runtime's Serve shutdown wait (no cluster: the dashboard's answers are given)."""

from __future__ import annotations

from typing import Any

import pytest

from rayfleet.platform import local

DIED = "Request failed with status code 500: ray.exceptions.ActorDiedError: ServeController"


class Dashboard:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.deleted = False

    def delete_applications(self) -> None:
        self.deleted = True

    def get_serve_details(self) -> dict[str, Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> Dashboard:
    board = Dashboard([])
    monkeypatch.setattr(local, "_submission_client", lambda _url: board)
    monkeypatch.setattr(local.time, "sleep", lambda _s: None)
    return board


def test_a_controller_killed_mid_answer_is_still_exiting(dashboard: Dashboard) -> None:
    dashboard.answers = [{"controller_info": {"node_id": "n"}}, RuntimeError(DIED), {}]
    local.delete_apps("http://dashboard")
    assert dashboard.deleted and dashboard.answers == []  # waited for the empty answer


def test_other_dashboard_errors_are_raised(dashboard: Dashboard) -> None:
    dashboard.answers = [RuntimeError("Request failed with status code 401: unauthorized")]
    with pytest.raises(RuntimeError, match="401"):
        local.delete_apps("http://dashboard")
