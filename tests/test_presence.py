"""Presence: a notice is gone after GONE_POLLS answers without it from its own watcher."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from agent.notice import SPOT_INTERRUPTION, Notice
from agent.presence import GONE_POLLS, Presence

NOW = datetime(2026, 1, 5, 18, 0, tzinfo=timezone.utc)


def notice(event_id: str = "aws:i-1:spot-interruption") -> Notice:
    return Notice(
        "aws",
        SPOT_INTERRUPTION,
        "terminate",
        "i-1",
        event_id,
        NOW + timedelta(minutes=2),
        "{}",
        NOW,
    )


def test_a_notice_is_gone_only_after_its_watcher_answers_without_it_twice() -> None:
    presence = Presence(["spot", "asg"])
    presence.observe("spot", [notice()], 0.0)
    assert presence.observe("asg", [], 1.0) == [], "another watcher's answer says nothing"
    assert presence.observe("spot", [], 2.0) == []
    assert not presence.gone(notice().event_id)
    (gone,) = presence.observe("spot", [], 3.0)
    assert gone.notice == notice() and GONE_POLLS == 2
    assert presence.gone(notice().event_id)
    assert [t.notice for t in presence.all_gone()] == [notice()]


def test_coming_back_resets_the_count() -> None:
    presence = Presence(["spot"])
    presence.observe("spot", [notice()], 0.0)
    presence.observe("spot", [], 1.0)
    presence.observe("spot", [notice()], 2.0)
    assert presence.observe("spot", [], 3.0) == []


def test_a_notice_from_the_state_file_is_gone_once_every_watcher_missed_it() -> None:
    presence = Presence(["spot", "asg"])
    presence.track(notice(), 0.0)
    for t in range(GONE_POLLS):
        assert presence.observe("spot", [], float(t)) == []
    assert [g.notice for g in presence.observe("asg", [], 5.0)] == []
    assert [g.notice for g in presence.observe("asg", [], 6.0)] == [notice()]


def test_age_counts_from_the_first_sighting_or_the_restart() -> None:
    presence = Presence(["spot"])
    presence.observe("spot", [notice()], 10.0)
    assert presence.age(notice().event_id, 25.0) == 15.0
    presence.restart(notice().event_id, 20.0)
    assert presence.age(notice().event_id, 25.0) == 5.0
    presence.drop(notice().event_id)
    assert presence.age(notice().event_id, 25.0) == 0.0
