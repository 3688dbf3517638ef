"""GCP metadata values: every shape the server gives, and bodies that are not its own."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.clouds.gcp import parse
from agent.notice import SCHEDULED_MAINTENANCE, SPOT_INTERRUPTION

NOW = datetime(2026, 1, 5, 18, 0, 0, tzinfo=timezone.utc)
SEEN = NOW - timedelta(seconds=3)


@pytest.mark.parametrize("body", ["TRUE", "TRUE\n", " true "])
def test_preempted_true(body):
    assert parse.parse_preempted(body) is True


@pytest.mark.parametrize("body", ["FALSE", "false\n"])
def test_preempted_false(body):
    assert parse.parse_preempted(body) is False


@pytest.mark.parametrize("body", ["", "yes", "1", "<html>TRUE</html>", "TRUE FALSE"])
def test_preempted_unreadable(body):
    with pytest.raises(ValueError, match="neither TRUE nor FALSE"):
        parse.parse_preempted(body)


def test_preempted_notice_deadline_is_first_sighting_plus_notice():
    notice = parse.preempted_notice("TRUE", "4520031799277581759", SEEN, 30, NOW)
    assert notice is not None
    assert notice.kind == SPOT_INTERRUPTION and notice.terminal
    assert notice.provider == "gcp" and notice.action == "terminate"
    assert notice.deadline == SEEN + timedelta(seconds=30)
    assert notice.event_id == "gcp:4520031799277581759:spot-interruption"
    assert notice.detected_at == NOW


def test_preempted_false_is_no_notice():
    assert parse.preempted_notice("FALSE", "1", SEEN, 30, NOW) is None


def test_preempted_notice_with_a_long_notice_duration():
    notice = parse.preempted_notice("TRUE", "1", SEEN, 120, NOW)
    assert notice is not None and notice.deadline == SEEN + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ("MIGRATE_ON_HOST_MAINTENANCE", "migrate"),
        ("TERMINATE_ON_HOST_MAINTENANCE\n", "terminate"),
        ("SHUTDOWN_ON_HOST_MAINTENANCE", "shutdown"),
    ],
)
def test_maintenance_values(body, action):
    notice = parse.maintenance_notice(body, "7", SEEN, NOW)
    assert notice is not None
    assert notice.kind == SCHEDULED_MAINTENANCE and not notice.terminal
    assert notice.action == action
    assert notice.deadline == SEEN + timedelta(seconds=60)
    assert notice.event_id == f"gcp:7:scheduled-maintenance:{body.strip()}"


def test_maintenance_none_is_no_notice():
    assert parse.maintenance_notice("NONE", "7", SEEN, NOW) is None


def test_an_unknown_maintenance_word_is_still_maintenance(caplog):
    notice = parse.maintenance_notice("RESTART_ON_HOST_MAINTENANCE", "7", SEEN, NOW)
    assert notice is not None and notice.action == "restart"
    assert "unknown maintenance-event" in caplog.text


@pytest.mark.parametrize("body", ["", "none", "<html>", "MIGRATE ON HOST", "X" * 80])
def test_maintenance_unreadable(body):
    with pytest.raises(ValueError):
        parse.parse_maintenance_event(body)


def test_identity_values():
    assert parse.parse_instance_id("4520031799277581759\n") == "4520031799277581759"
    assert parse.parse_zone("projects/123456789012/zones/us-central1-a") == "us-central1-a"
    assert parse.parse_zone("europe-west4-b") == "europe-west4-b"


@pytest.mark.parametrize("body", ["", "a b", "<html>", "1;rm -rf", "9" * 40])
def test_bad_instance_ids(body):
    with pytest.raises(ValueError):
        parse.parse_instance_id(body)


@pytest.mark.parametrize("body", ["", "projects/1/regions/us", "Zone A"])
def test_bad_zones(body):
    with pytest.raises(ValueError):
        parse.parse_zone(body)
