"""`kinds`: one rule for scripts' headers and plugins' attributes."""

from __future__ import annotations

import pytest

from agent import notice as n
from agent.hooks import parse_kinds
from agent.hooks.scripts import HeaderError, parse_header

ALL = frozenset(n.KINDS)


@pytest.mark.parametrize(
    ("value", "kinds"),
    [
        (None, n.TERMINAL_KINDS),
        ("all", ALL),
        (["all"], ALL),
        ("spot-interruption", {n.SPOT_INTERRUPTION}),
        (
            "spot-interruption, rebalance-recommendation",
            {n.SPOT_INTERRUPTION, n.REBALANCE_RECOMMENDATION},
        ),
        (["spot-interruption", " asg-termination "], n.TERMINAL_KINDS),
        (("scheduled-maintenance",), {n.SCHEDULED_MAINTENANCE}),
    ],
)
def test_what_is_accepted(value: object, kinds: frozenset[str]) -> None:
    assert parse_kinds(value) == kinds  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Spot", "unknown kinds ['Spot']"),
        (["spot-interruption", "preempted"], "unknown kinds ['preempted']"),
        ("", "empty kind"),
        ("spot-interruption,", "empty kind"),
        ([], "empty kind"),
        (5, "must be a string or a list"),
        ([1], "must be names"),
    ],
)
def test_what_is_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_kinds(value)  # type: ignore[arg-type]


def test_a_script_header_and_a_plugin_read_kinds_alike() -> None:
    """The same text gives the same kinds, or the same refusal, in both places."""
    for text in ("all", "rebalance-recommendation,spot-interruption", "bogus"):
        try:
            expected = parse_kinds(text)
        except ValueError as exc:
            with pytest.raises(HeaderError, match=str(exc).split(" (")[0].replace("[", r"\[")):
                parse_header(f"# preempt-agent: kinds={text}")
        else:
            assert parse_header(f"# preempt-agent: kinds={text}")["kinds"] == expected
