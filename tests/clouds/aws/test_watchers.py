"""AWS: every payload shape of the metadata paths, and the watchers against a real HTTP mock."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent import notice as n
from agent.clock import Clock
from agent.clouds._shared.token_client import MetadataError
from agent.clouds.aws import CLOUD
from agent.clouds.aws import watchers as aws
from agent.clouds.aws.config import AwsConfig
from agent.clouds.aws.mock import FLAVOR as AWS
from agent.clouds.aws.mock import defaults as aws_defaults
from agent.clouds.aws.mock import spot_action as aws_spot_action
from agent.clouds.aws.watchers import (
    parse_asg_state,
    parse_identity,
    parse_maintenance,
    parse_rebalance,
    parse_spot_action,
)
from agent.config import WatcherConfig
from agent.mock import MockMetadataServer

UTC = timezone.utc
NOW = datetime(2017, 9, 18, 8, 20, 0, tzinfo=UTC)
IID = "i-1234567890abcdef0"

MAINTENANCE_EVENT = {
    "NotBefore": "21 Jan 2019 09:00:43 GMT",
    "Code": "system-reboot",
    "Description": "scheduled reboot",
    "EventId": "instance-event-0d59937288b749b32",
    "NotAfter": "21 Jan 2019 09:17:23 GMT",
    "State": "active",
}


def event(**changes: object) -> dict[str, object]:
    item = dict(MAINTENANCE_EVENT)
    for key, value in changes.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


# -- spot instance-action ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_spot_action(action: str) -> None:
    body = json.dumps({"action": action, "time": "2017-09-18T08:22:00Z"})
    notice = parse_spot_action(body, IID, NOW)
    assert notice.provider == "aws"
    assert notice.kind == n.SPOT_INTERRUPTION
    assert notice.terminal
    assert notice.action == action
    assert notice.instance_id == IID
    assert notice.deadline == datetime(2017, 9, 18, 8, 22, tzinfo=UTC)
    assert notice.raw == body
    assert notice.detected_at == NOW
    assert notice.event_id == f"aws:{IID}:spot-interruption"


def test_spot_action_is_normalised() -> None:
    notice = parse_spot_action(
        '{"action": " Terminate ", "time": "2017-09-18T08:22:00Z"}', IID, NOW
    )
    assert notice.action == "terminate"


def test_spot_unknown_action_is_still_a_notice(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.clouds.aws.watchers"):
        notice = parse_spot_action(
            '{"action": "evaporate", "time": "2017-09-18T08:22:00Z"}', IID, NOW
        )
    assert notice.kind == n.SPOT_INTERRUPTION
    assert notice.action == "evaporate"
    assert notice.deadline == datetime(2017, 9, 18, 8, 22, tzinfo=UTC)
    assert "unknown action 'evaporate'" in caplog.text


@pytest.mark.parametrize(
    "body",
    [
        '{"action": "terminate"}',
        '{"action": "terminate", "time": null}',
        '{"action": "terminate", "time": "soon"}',
        '{"action": "terminate", "time": 1505722920}',
        '{"action": "terminate", "time": "2017-09-18T08:22:00"}',
    ],
    ids=["missing", "null", "garbage", "number", "naive"],
)
def test_spot_unreadable_time_means_two_minutes_from_now(
    body: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.clouds.aws.watchers"):
        notice = parse_spot_action(body, IID, NOW)
    assert notice.deadline == NOW + timedelta(minutes=2)
    assert notice.action == "terminate"
    assert "unreadable; assuming" in caplog.text


@pytest.mark.parametrize(
    "body",
    ["", "terminate", "{not json", "<html>Bad Gateway</html>"],
    ids=["empty", "word", "broken", "html"],
)
def test_spot_not_json(body: str) -> None:
    with pytest.raises(ValueError, match="spot instance-action is not JSON"):
        parse_spot_action(body, IID, NOW)


@pytest.mark.parametrize(
    "body",
    [
        '["terminate"]',
        '"terminate"',
        "null",
        "{}",
    ],
)
def test_spot_not_an_object_with_an_action(body: str) -> None:
    with pytest.raises(ValueError, match="spot instance-action has no action"):
        parse_spot_action(body, IID, NOW)


@pytest.mark.parametrize("body", ['{"action": 1}', '{"time": "2017-09-18T08:22:00Z"}'])
def test_a_malformed_but_present_spot_notice_still_drains(body: str) -> None:
    notice = parse_spot_action(body, IID, NOW)
    assert notice.kind == "spot-interruption"
    assert notice.action == "unknown"


def test_spot_event_id_is_stable_when_time_changes() -> None:
    first = parse_spot_action(aws_spot_action("terminate", NOW + timedelta(minutes=2)), IID, NOW)
    later = NOW + timedelta(seconds=5)
    second = parse_spot_action(
        aws_spot_action("terminate", later + timedelta(minutes=2)), IID, later
    )
    assert first.deadline != second.deadline
    assert first.event_id == second.event_id
    other = parse_spot_action(aws_spot_action("terminate", NOW), "i-other", NOW)
    assert other.event_id != first.event_id


# -- rebalance ----------------------------------------------------------------------------------


def test_rebalance() -> None:
    body = '{"noticeTime": "2020-10-27T08:22:00Z"}'
    notice = parse_rebalance(body, IID, NOW)
    assert notice.kind == n.REBALANCE_RECOMMENDATION
    assert not notice.terminal
    assert notice.action == "rebalance"
    assert notice.deadline is None
    assert notice.raw == body
    assert notice.event_id == f"aws:{IID}:rebalance-recommendation"
    again = parse_rebalance('{"noticeTime": "2020-10-27T08:23:00Z"}', IID, NOW)
    assert again.event_id == notice.event_id


def test_rebalance_bad_bodies() -> None:
    with pytest.raises(ValueError, match="rebalance recommendation is not JSON"):
        parse_rebalance("soon", IID, NOW)
    with pytest.raises(ValueError, match="rebalance recommendation is not an object"):
        parse_rebalance("[]", IID, NOW)


# -- scheduled maintenance ----------------------------------------------------------------------


def test_maintenance_active_event() -> None:
    body = json.dumps([MAINTENANCE_EVENT])
    (notice,) = parse_maintenance(body, IID, NOW)
    assert notice.kind == n.SCHEDULED_MAINTENANCE
    assert not notice.terminal
    assert notice.action == "system-reboot"
    assert notice.deadline == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)
    assert notice.event_id == f"aws:{IID}:scheduled-maintenance:instance-event-0d59937288b749b32"
    assert json.loads(notice.raw) == MAINTENANCE_EVENT


@pytest.mark.parametrize(
    ("state", "count"),
    [("active", 1), ("Active", 1), ("completed", 0), ("canceled", 0), (None, 1)],
)
def test_maintenance_only_active_events_count(state: str | None, count: int) -> None:
    body = json.dumps([event(State=state)])
    assert len(parse_maintenance(body, IID, NOW)) == count


def test_maintenance_mixed_states_keep_their_own_ids() -> None:
    body = json.dumps(
        [
            event(EventId="e-active-1", Code="instance-reboot"),
            event(EventId="e-done", State="completed"),
            event(EventId="e-canceled", State="canceled"),
            event(EventId="e-active-2", Code="instance-retirement"),
        ]
    )
    notices = parse_maintenance(body, IID, NOW)
    assert [(x.event_id.rsplit(":", 1)[-1], x.action) for x in notices] == [
        ("e-active-1", "instance-reboot"),
        ("e-active-2", "instance-retirement"),
    ]


@pytest.mark.parametrize("body", ["[]", "", "  \n"], ids=["empty-list", "empty", "blank"])
def test_maintenance_nothing_scheduled(body: str) -> None:
    assert parse_maintenance(body, IID, NOW) == []


def test_maintenance_without_not_after() -> None:
    (notice,) = parse_maintenance(json.dumps([event(NotAfter=None)]), IID, NOW)
    assert notice.deadline == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)


@pytest.mark.parametrize("not_before", ["2019-01-21T09:00:43Z", "tomorrow", None])
def test_maintenance_unreadable_not_before_keeps_the_event(
    not_before: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.clouds.aws.watchers"):
        (notice,) = parse_maintenance(json.dumps([event(NotBefore=not_before)]), IID, NOW)
    assert notice.deadline is None
    assert notice.action == "system-reboot"
    assert "instance-event-0d59937288b749b32 has an unreadable NotBefore" in caplog.text


def test_maintenance_damaged_item_skipped_others_survive(caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps(
        [
            event(EventId=None),
            "system-reboot",
            event(EventId="e-good"),
            event(EventId="e-no-code", Code=None),
            None,
        ]
    )
    with caplog.at_level(logging.WARNING, logger="agent.clouds.aws.watchers"):
        notices = parse_maintenance(body, IID, NOW)
    assert [x.event_id for x in notices] == [f"aws:{IID}:scheduled-maintenance:e-good"]
    skipped = [m for m in caplog.messages if m.startswith("skipping a scheduled maintenance")]
    assert len(skipped) == 4


@pytest.mark.parametrize("body", ['{"EventId": "e-1"}', '"system-reboot"', "null", "3"])
def test_maintenance_not_a_list(body: str) -> None:
    with pytest.raises(ValueError, match="scheduled maintenance is not a list"):
        parse_maintenance(body, IID, NOW)


def test_maintenance_not_json() -> None:
    with pytest.raises(ValueError, match="scheduled maintenance is not JSON"):
        parse_maintenance("[{", IID, NOW)


# -- Auto Scaling lifecycle state -----------------------------------------------------------------


@pytest.mark.parametrize("body", ["Terminated\n", "Warmed:Terminated"])
def test_asg_terminated(body: str) -> None:
    notice = parse_asg_state(body, IID, NOW)
    assert notice is not None
    assert notice.kind == n.ASG_TERMINATION
    assert notice.terminal
    assert notice.action == "terminate"
    assert notice.deadline is None
    assert notice.event_id == f"aws:{IID}:asg-termination"


@pytest.mark.parametrize(
    "body",
    [
        "InService",
        "Standby",
        "Detached",
        "Warmed:Stopped",
        "Warmed:Running",
        "Warmed:Hibernated",
        "terminated",
        "",
    ],
)
def test_asg_other_states_are_no_notice(body: str) -> None:
    assert parse_asg_state(body, IID, NOW) is None


# -- identity document --------------------------------------------------------------------------


def test_identity_document() -> None:
    body = json.dumps(
        {
            "instanceId": IID,
            "region": "us-east-1",
            "availabilityZone": "us-east-1a",
            "instanceType": "m5.large",
            "accountId": "123456789012",
        }
    )
    data = parse_identity(body)
    assert (data["instanceId"], data["region"], data["availabilityZone"]) == (
        IID,
        "us-east-1",
        "us-east-1a",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "instance identity document is not JSON"),
        ("[]", "lacks instanceId or region"),
        ('{"region": "us-east-1"}', "lacks instanceId or region"),
        ('{"instanceId": "i-1", "region": ""}', "lacks instanceId or region"),
    ],
)
def test_identity_document_bad(body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_identity(body)


# -- watchers against the mock ------------------------------------------------------------------


@pytest.fixture
def mock() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(AWS) as server:
        aws_defaults(server, instance_id=IID)
        yield server


def watchers_for(server: MockMetadataServer) -> dict[str, aws.PathWatcher]:
    found = CLOUD.watchers(AwsConfig(metadata_url=server.url, timeout=2.0), Clock())
    return {w.name: w for w in found}  # type: ignore[misc]


def instance_id_reads(server: MockMetadataServer) -> int:
    return sum(1 for r in server.requests if r.path == aws.INSTANCE_ID and r.method == "GET")


def test_provider_builds_the_enabled_watchers() -> None:
    section = AwsConfig(spot=WatcherConfig(True, 0.5), rebalance=WatcherConfig(False, 5.0))
    found = {w.name: w for w in CLOUD.watchers(section, Clock())}
    assert sorted(found) == ["aws-asg", "aws-maintenance", "aws-spot"]
    assert found["aws-spot"].interval == 0.5
    assert found["aws-maintenance"].interval == 60.0


def test_404_is_no_notice(mock: MockMetadataServer) -> None:
    for watcher in watchers_for(mock).values():
        assert watcher.poll() == []
    paths = {r.path for r in mock.requests if r.method == "GET"}
    assert {aws.SPOT_ACTION, aws.REBALANCE, aws.MAINTENANCE, aws.ASG_STATE} <= paths


def test_spot_notice_through_the_watcher(mock: MockMetadataServer) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    mock.set(aws.SPOT_ACTION, aws_spot_action("stop", when))
    (notice,) = watchers_for(mock)["aws-spot"].poll()
    assert (notice.kind, notice.action, notice.instance_id) == (n.SPOT_INTERRUPTION, "stop", IID)
    assert notice.deadline == when


def test_moving_time_gives_one_event_id(mock: MockMetadataServer) -> None:
    polls = []

    def moving() -> str:
        polls.append(1)
        return aws_spot_action("terminate", NOW + timedelta(seconds=len(polls)))

    mock.set_dynamic(aws.SPOT_ACTION, moving)
    watcher = watchers_for(mock)["aws-spot"]
    found = [watcher.poll()[0] for _ in range(3)]
    assert len({x.deadline for x in found}) == 3
    assert len({x.event_id for x in found}) == 1


def test_maintenance_and_asg_through_the_watchers(mock: MockMetadataServer) -> None:
    mock.set(aws.MAINTENANCE, json.dumps([MAINTENANCE_EVENT, event(EventId="e-2")]))
    mock.set(aws.ASG_STATE, "InService")
    watchers = watchers_for(mock)
    assert len(watchers["aws-maintenance"].poll()) == 2
    assert watchers["aws-asg"].poll() == []
    mock.set(aws.ASG_STATE, "Terminated")
    (notice,) = watchers["aws-asg"].poll()
    assert notice.kind == n.ASG_TERMINATION


def test_instance_id_read_once_across_many_polls(mock: MockMetadataServer) -> None:
    watchers = watchers_for(mock)
    for _ in range(5):
        for watcher in watchers.values():
            watcher.poll()
    assert instance_id_reads(mock) == 1
    spot_gets = [r for r in mock.requests if r.path == aws.SPOT_ACTION]
    assert len(spot_gets) == 5
    puts = [r for r in mock.requests if r.method == "PUT"]
    assert len(puts) == 1, "one token shared by every watcher"


def test_missing_instance_id_is_transient_and_asked_again(mock: MockMetadataServer) -> None:
    mock.set(aws.INSTANCE_ID, None)
    watcher = watchers_for(mock)["aws-rebalance"]  # the spot path is polled without one
    spot_requests = [r for r in mock.requests if r.path == aws.SPOT_ACTION]
    with pytest.raises(MetadataError, match="instance-id is empty or missing"):
        watcher.poll()
    assert [r for r in mock.requests if r.path == aws.SPOT_ACTION] == spot_requests
    assert not any(r.path == aws.REBALANCE for r in mock.requests)
    mock.set(aws.INSTANCE_ID, IID)
    assert watcher.poll() == []
    assert watcher.poll() == []
    assert instance_id_reads(mock) == 2


def test_unreadable_body_surfaces_as_value_error(mock: MockMetadataServer) -> None:
    mock.set(aws.SPOT_ACTION, "<html>oops</html>")
    with pytest.raises(ValueError, match="not JSON"):
        watchers_for(mock)["aws-spot"].poll()


def test_imdsv1_only_instance_still_polls(
    mock: MockMetadataServer, caplog: pytest.LogCaptureFixture
) -> None:
    mock.token_endpoint_status = 403
    mock.token_required = False
    mock.set(aws.ASG_STATE, "Terminated")
    with caplog.at_level(logging.WARNING, logger="agent.clouds._shared.token_client"):
        (notice,) = watchers_for(mock)["aws-asg"].poll()
    assert notice.instance_id == IID
    assert "continuing without a session token" in caplog.text
    gets = [r for r in mock.requests if r.method == "GET"]
    assert all(AWS.token_header not in r.headers for r in gets)
