"""The instance's identity in webhook bodies, and how the daemon tells it: in the background."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from agent import report
from agent.clock import Clock
from agent.clouds.base import Cloud
from agent.config import parse
from agent.report.payload import body
from tests.report.conftest import make_notice
from tests.waiting import wait_until

IDENTITY = {"region": "us-east-1", "zone": "us-east-1a", "instance_type": "m5.large"}


def build(tmp_path: Path, url: str, extra: str = "") -> report.Reporter:
    config = parse(f'state_dir = "{tmp_path}"\n[[webhooks]]\nurl = "{url}/hook"\n{extra}\n')
    return report.build(config, tmp_path, "aws")


def test_bodies_carry_the_identity_once_it_is_told(tmp_path: Path, receiver: Any) -> None:
    got = receiver()
    reporter = build(tmp_path, got.url)
    early = make_notice(instance_id="i-early")
    reporter.notice(early, early.deadline)  # before the identity is known: hostname only
    wait_until(lambda: got.count() == 1, what="the first receipt")
    reporter.identity(dict(IDENTITY))
    notice = make_notice()
    reporter.notice(notice, notice.deadline)
    reporter.outcome(notice, "drained", {"status": "drained"})
    wait_until(lambda: got.count() == 3, what="the receipt and outcome")
    reporter.close(report.CLOSE_GRACE)

    first, receipt, outcome = got.bodies()
    assert not set(IDENTITY) & set(first) and first["hostname"]
    for doc in (receipt, outcome):
        assert {k: doc[k] for k in IDENTITY} == IDENTITY
        assert doc["hostname"] and doc["provider"] == "aws"


def test_keys_the_cloud_did_not_give_are_absent(tmp_path: Path, receiver: Any) -> None:
    got = receiver()
    reporter = build(tmp_path, got.url)
    reporter.identity({"region": "eastus", "instance_type": "Standard_D2s_v3"})
    notice = make_notice()
    reporter.notice(notice, notice.deadline)
    wait_until(lambda: got.count() == 1, what="the receipt")
    reporter.close(report.CLOSE_GRACE)
    (doc,) = got.bodies()
    assert doc["region"] == "eastus" and doc["instance_type"] == "Standard_D2s_v3"
    assert "zone" not in doc


def test_a_template_sees_the_identity(tmp_path: Path, receiver: Any) -> None:
    pytest.importorskip("jinja2")
    got = receiver()
    reporter = build(
        tmp_path,
        got.url,
        'format = "template"\ntemplate = "{{ instance_id }} in {{ zone }} ({{ instance_type }})"',
    )
    reporter.identity(dict(IDENTITY))
    notice = make_notice()
    reporter.notice(notice, notice.deadline)
    wait_until(lambda: got.count() == 1, what="the receipt")
    reporter.close(report.CLOSE_GRACE)
    assert got.requests[0]["body"].decode() == f"{notice.instance_id} in us-east-1a (m5.large)"


def test_payload_body_without_identity_has_no_identity_keys() -> None:
    notice = make_notice()
    doc = body("notice", notice, notice.deadline, notice.detected_at, "host")
    assert not set(IDENTITY) & set(doc)
    doc = body("notice", notice, notice.deadline, notice.detected_at, "host", identity=IDENTITY)
    assert {k: doc[k] for k in IDENTITY} == IDENTITY


class Recorder(report.Reporter):
    def __init__(self) -> None:
        self.told: list[dict[str, str]] = []

    def identity(self, values: dict[str, str]) -> None:
        self.told.append(values)


class Silent:
    """A sink without an ``identity`` method (the status and metrics sinks have none)."""

    def status(self, text: str) -> None:
        pass


def test_fan_out_passes_the_identity_on_and_skips_sinks_without_it() -> None:
    first, last = Recorder(), Recorder()
    report.FanOut([first, Silent(), last]).identity(dict(IDENTITY))  # type: ignore[list-item]
    assert first.told == [IDENTITY] and last.told == [IDENTITY]


class SlowCloud(Cloud):
    name = "slow"
    section = object

    def __init__(self, values: Any) -> None:
        self.values = values
        self.release = threading.Event()

    def watchers(self, section: Any, clock: Clock) -> list[Any]:
        return []

    def identity(self, section: Any, clock: Clock) -> dict[str, str]:
        self.release.wait(10)
        if isinstance(self.values, Exception):
            raise self.values
        return dict(self.values)


def test_tell_identity_never_waits_for_the_cloud() -> None:
    cloud, sink = SlowCloud(IDENTITY), Recorder()
    thread = report.tell_identity(cloud, None, Clock(), sink)
    assert thread.daemon and thread.is_alive() and sink.told == []
    cloud.release.set()
    thread.join(5)
    assert sink.told == [IDENTITY]


def test_tell_identity_logs_a_failure_once(caplog: pytest.LogCaptureFixture) -> None:
    cloud, sink = SlowCloud(RuntimeError("boom")), Recorder()
    cloud.release.set()
    with caplog.at_level(logging.INFO, logger="agent.report"):
        report.tell_identity(cloud, None, Clock(), sink).join(5)
    assert sink.told == []
    failures = [r for r in caplog.records if "identity failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
