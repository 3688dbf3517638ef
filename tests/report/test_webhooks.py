"""Webhooks against a real HTTP receiver on loopback."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent import report
from agent.config import parse
from agent.report.webhooks import WebhookReporter
from tests.report.conftest import make_notice, result
from tests.waiting import wait_until

KEYS = {
    "event",
    "provider",
    "kind",
    "action",
    "instance_id",
    "event_id",
    "deadline",
    "seconds_left",
}


def hooks_for(url: str, extra: str = "") -> Any:
    return parse(f'[[webhooks]]\nurl = "{url}"\n{extra}\n').webhooks


def fates(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agent.report.webhooks" and " delivered" in r.getMessage()
    ]


def test_receipt_arrives_while_the_first_hook_still_runs(tmp_path: Path, receiver: Any) -> None:
    got = receiver()
    config = parse(f'state_dir = "{tmp_path}"\n[[webhooks]]\nurl = "{got.url}/hook"\n')
    reporter = report.build(config, tmp_path, "aws")
    notice = make_notice()
    deadline = notice.deadline
    assert deadline is not None
    step_done = threading.Event()

    def run() -> None:  # stands in for the run worker: receipt, a slow first hook, the rest
        reporter.notice(notice, deadline)
        step_done.wait(30)
        reporter.hook_result(notice, "drain", result("10-slow"))
        reporter.hook_result(notice, "drain", result("action:aws-elb", "failed", 0.2, 1))
        reporter.outcome(notice, "drained", {"status": "drained"})

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: got.count() == 1, what="the receipt webhook")
        assert worker.is_alive(), "the hook run should still be in its first step"
    finally:
        step_done.set()
        worker.join(10)
    wait_until(lambda: got.count() == 2, what="the outcome webhook")
    reporter.close(report.CLOSE_GRACE)

    receipt, outcome = got.bodies()
    assert KEYS <= set(receipt)
    assert receipt["event"] == "notice"
    assert (receipt["provider"], receipt["kind"], receipt["action"]) == (
        "aws",
        "spot-interruption",
        "terminate",
    )
    assert receipt["instance_id"] == notice.instance_id
    assert receipt["event_id"] == notice.event_id
    assert receipt["deadline"].endswith("Z") and receipt["deadline"] == notice.to_dict()["deadline"]
    assert 100 <= receipt["seconds_left"] <= 120
    assert receipt["hostname"] == socket.gethostname()
    assert "outcome" not in receipt
    assert outcome["event"] == "outcome"
    assert outcome["outcome"] == "drained"
    assert KEYS <= set(outcome)
    assert outcome["hooks"]["10-slow"]["outcome"] == "ok"
    assert outcome["hooks"]["action:aws-elb"] == {
        "outcome": "failed",
        "exit_code": 1,
        "started": "2024-01-01T00:00:00Z",
        "duration": 0.2,
        "detail": "",
    }
    assert got.requests[0]["headers"]["Content-Type"] == "application/json"


def test_notice_returns_at_once_while_the_receiver_hangs(receiver: Any) -> None:
    got = receiver(hang=True)
    reporter = WebhookReporter(hooks_for(got.url, "timeout = 30"))
    notice = make_notice()
    assert notice.deadline is not None
    started = time.monotonic()
    reporter.notice(notice, notice.deadline)
    reporter.outcome(notice, "drained", {})
    assert time.monotonic() - started < 0.5
    wait_until(lambda: got.count() == 1, what="the receipt to reach the receiver")
    reporter.close(0.1)


def test_a_receiver_failing_with_500_gets_the_retries(
    receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.report.webhooks")
    got = receiver(statuses=[500, 503, 429])
    reporter = WebhookReporter(hooks_for(got.url), initial_backoff=0.01)
    notice = make_notice()
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    wait_until(lambda: fates(caplog), what="the delivery's fate")
    reporter.close(1.0)
    assert got.count() == 4
    bodies = got.bodies()
    assert all(b == bodies[0] for b in bodies)
    assert fates(caplog) == [
        f"webhooks[0] (http://127.0.0.1:{got.url.rsplit(':', 1)[1]}): notice event of "
        f"{notice.event_id} delivered (HTTP 200, 4 attempts)"
    ]


@pytest.mark.parametrize("status", [400, 302])
def test_client_errors_and_redirects_are_not_retried(
    receiver: Any, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    caplog.set_level(logging.INFO, logger="agent.report.webhooks")
    got = receiver(statuses=[status])
    reporter = WebhookReporter(hooks_for(got.url), initial_backoff=0.01)
    notice = make_notice()
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    wait_until(lambda: fates(caplog), what="the delivery's fate")
    reporter.close(1.0)
    assert got.count() == 1
    [fate] = fates(caplog)
    assert f"not delivered: HTTP {status}" in fate


def test_a_hanging_receiver_does_not_delay_close_beyond_the_grace(
    receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.report.webhooks")
    got = receiver(hang=True)
    reporter = WebhookReporter(hooks_for(got.url, "timeout = 30"))
    notice = make_notice()
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    reporter.outcome(notice, "confirmed", {"confirmation": "shutting-down"})
    wait_until(lambda: got.count() == 1, what="the first attempt")
    started = time.monotonic()
    reporter.close(0.5)
    assert time.monotonic() - started < 1.0
    told = fates(caplog)
    assert len(told) == 2
    assert "notice event" in told[0] and "still trying when the agent exited" in told[0]
    assert "outcome (confirmed) event" in told[1] and "the agent is exiting" in told[1]


def test_events_filter_and_slack_format(receiver: Any) -> None:
    got = receiver()
    reporter = WebhookReporter(hooks_for(got.url, 'format = "slack"\nevents = ["outcome"]'))
    notice = make_notice()
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    reporter.hook_result(notice, "drain", result("10-stop", "timeout", 30.0))
    reporter.outcome(notice, "not-confirmed", {"confirmation": "the API says running"})
    wait_until(lambda: got.count() == 1, what="the outcome")
    reporter.close(1.0)
    [doc] = got.bodies()
    assert list(doc) == ["text"]
    assert "not-confirmed: the API says running" in doc["text"]
    assert "10-stop timeout (30.0 s)" in doc["text"]
    assert notice.instance_id in doc["text"]


def test_template_format(receiver: Any) -> None:
    pytest.importorskip("jinja2")
    got = receiver()
    template = '{"msg": {{ (kind ~ " on " ~ instance_id) | tojson }}, "left": {{ seconds_left }}}'
    extra = f'format = "template"\ntemplate = \'{template}\'\nevents = ["notice"]'
    reporter = WebhookReporter(hooks_for(got.url, extra))
    notice = make_notice()
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    reporter.outcome(notice, "drained", {})
    wait_until(lambda: got.count() == 1, what="the notice")
    reporter.close(1.0)
    [doc] = got.bodies()
    assert doc["msg"] == f"spot-interruption on {notice.instance_id}"
    assert 100 <= doc["left"] <= 120


def test_no_secret_from_the_url_or_headers_in_any_log_record(
    receiver: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "requests", "agent"):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.setenv("HOOK_TOKEN", "Bearer header-secret-1")
    secret_file = tmp_path / "key"
    secret_file.write_text("header-secret-2\n")
    secret_file.chmod(0o600)
    flaky = receiver(statuses=[500])
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()  # nothing listens there now: connection refused
    host = flaky.url.split("//")[1]
    config = parse(
        f"""
[[webhooks]]
url = "http://user-secret:pw-secret@{host}/path-secret/x?token=query-secret"
headers = {{ Authorization = "env:HOOK_TOKEN", X-Key = "file:{secret_file}" }}
[[webhooks]]
url = "http://127.0.0.1:{port}/path-secret-2?token=query-secret-2"
"""
    )
    reporter = WebhookReporter(config.webhooks, initial_backoff=0.01)
    notice = make_notice()
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    wait_until(lambda: flaky.count() == 2, what="the retry")
    wait_until(lambda: any("delivered" in r.getMessage() for r in caplog.records), what="fate")
    reporter.close(0.3)
    assert flaky.requests[0]["headers"]["Authorization"] == "Bearer header-secret-1"
    assert flaky.requests[0]["headers"]["X-Key"] == "header-secret-2"
    assert flaky.requests[0]["path"] == "/path-secret/x?token=query-secret"

    secrets = [
        "header-secret-1",
        "header-secret-2",
        "user-secret",
        "pw-secret",
        "path-secret",
        "query-secret",
    ]
    urllib3_lines = [r for r in caplog.records if r.name.startswith("urllib3")]
    assert urllib3_lines, "the HTTP library's debug lines should have been captured"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in secrets:
            assert secret not in text, f"{secret} leaked in {record.name}: {record.getMessage()}"
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"webhooks[1] (http://127.0.0.1:{port})" in m for m in messages)
