"""Backoff policies (agent.backoff) and the rate-limited failure log (agent.ratelimit)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import tenacity

from agent.backoff import Backoff, sleep_until, stop_at
from agent.ratelimit import RateLimitedLog

LOGGER = "test.retry"


# -- Backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_within_its_jitter_and_is_capped() -> None:
    for _ in range(50):
        backoff = Backoff(initial=1.0, maximum=10.0, jitter=0.5)
        delays = [backoff.next_delay() for _ in range(7)]
        for base, delay in zip([1.0, 2.0, 4.0, 8.0], delays):
            assert base <= delay <= base + 0.5
        assert delays[4:] == [10.0, 10.0, 10.0]
        assert backoff.failures == 7


def test_backoff_jitter_varies() -> None:
    delays = {Backoff(initial=1.0, maximum=10.0, jitter=0.5).next_delay() for _ in range(20)}
    assert len(delays) > 1


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, jitter=0.0)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 1.0
    assert backoff.next_delay() == 2.0


def test_backoff_never_exceeds_the_cap_however_long_it_fails() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, jitter=5.0)
    for _ in range(3000):
        delay = backoff.next_delay()
        assert 0.0 < delay <= 10.0
    assert delay == 10.0


def test_backoffs_are_independent() -> None:
    one = Backoff(initial=1.0, maximum=10.0, jitter=0.0)
    two = Backoff(initial=1.0, maximum=10.0, jitter=0.0)
    one.next_delay()
    one.next_delay()
    assert two.next_delay() == 1.0
    assert one.next_delay() == 4.0


# -- RateLimitedLog -----------------------------------------------------------------------------


class Ticker:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def ratelog(ticker: Ticker) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger(LOGGER), every=60.0, monotonic=ticker)


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_first_failure_is_logged(ratelog: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.failure("metadata service: %s", "connection refused")
    assert records(caplog) == [(logging.WARNING, "metadata service: connection refused")]
    assert ratelog.failing


def test_failures_within_the_window_are_suppressed_then_counted(
    ratelog: RateLimitedLog, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.failure("poll failed: %s", "a")
        for _ in range(4):
            ticker.t += 10
            ratelog.failure("poll failed: %s", "b")
        ticker.t += 19.9  # 59.9 s after the first line
        ratelog.failure("poll failed: %s", "c")
        assert len(records(caplog)) == 1
        ticker.t += 0.1
        ratelog.failure("poll failed: %s", "d")
        ticker.t += 1
        ratelog.failure("poll failed: %s", "e")
        ticker.t += 60
        ratelog.failure("poll failed: %s", "f")
    assert records(caplog) == [
        (logging.WARNING, "poll failed: a"),
        (logging.WARNING, "poll failed: d (5 similar failures not logged)"),
        (logging.WARNING, "poll failed: f (1 similar failures not logged)"),
    ]


def test_recovery_is_logged_once(
    ratelog: RateLimitedLog, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.recovered("metadata service answers again")  # never failed: nothing to say
        ratelog.failure("down")
        ticker.t += 1
        ratelog.failure("down")
        ratelog.recovered("metadata service answers again")
        ratelog.recovered("metadata service answers again")
    assert records(caplog) == [
        (logging.WARNING, "down"),
        (logging.INFO, "metadata service answers again"),
    ]
    assert not ratelog.failing


def test_a_new_outage_after_recovery_is_logged_at_once_with_a_fresh_count(
    ratelog: RateLimitedLog, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.failure("down")
        ticker.t += 1
        ratelog.failure("down")  # suppressed, then forgotten by the recovery
        ratelog.recovered("up")
        ticker.t += 1
        ratelog.failure("down again")
    assert records(caplog) == [
        (logging.WARNING, "down"),
        (logging.INFO, "up"),
        (logging.WARNING, "down again"),
    ]


def test_percent_in_arguments_is_not_a_format(
    ratelog: RateLimitedLog, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.failure("GET %s failed", "/a%s%d")
        ticker.t += 1
        ratelog.failure("GET %s failed", "/a%s%d")
        ticker.t += 60
        ratelog.failure("GET %s failed", "/a%s%d")
    assert records(caplog)[-1] == (
        logging.WARNING,
        "GET /a%s%d failed (1 similar failures not logged)",
    )


def test_failures_of_different_kinds_are_limited_separately(
    ratelog: RateLimitedLog, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.failure("refused", key="connect")
        ticker.t += 1
        ratelog.failure("garbage body", key="parse")  # a new kind: logged at once
        ticker.t += 1
        ratelog.failure("refused", key="connect")
        ratelog.failure("garbage body", key="parse")
        ratelog.failure("garbage body", key="parse")
        ticker.t += 60
        ratelog.failure("refused", key="connect")
        ratelog.failure("garbage body", key="parse")
    assert records(caplog) == [
        (logging.WARNING, "refused"),
        (logging.WARNING, "garbage body"),
        (logging.WARNING, "refused (1 similar failures not logged)"),
        (logging.WARNING, "garbage body (2 similar failures not logged)"),
    ]


def test_recovery_forgets_every_kind(
    ratelog: RateLimitedLog, ticker: Ticker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ratelog.failure("refused", key="connect")
        ratelog.failure("garbage", key="parse")
        ratelog.failure("garbage", key="parse")
        ratelog.recovered("up")
        ticker.t += 1
        ratelog.failure("garbage", key="parse")
    assert records(caplog)[-2:] == [(logging.INFO, "up"), (logging.WARNING, "garbage")]


# -- budgets for tenacity loops -----------------------------------------------------------------


def test_stop_at_the_end_or_on_cancel(ticker: Ticker) -> None:
    cancel = threading.Event()
    stop = stop_at(ticker, ticker.t + 10, cancel)
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    assert not stop(state)
    ticker.t += 9.9
    assert not stop(state)
    ticker.t += 0.1
    assert stop(state)
    ticker.t -= 5
    cancel.set()
    assert stop(state)


def test_sleep_until_clips_to_the_budget(ticker: Ticker) -> None:
    waits: list[float] = []
    cancel = threading.Event()

    def wait_for(event: threading.Event, seconds: float) -> bool:
        assert event is cancel
        waits.append(seconds)
        ticker.t += seconds
        return event.is_set()

    sleep = sleep_until(wait_for, ticker, ticker.t + 10, cancel)
    sleep(4)
    sleep(4)
    sleep(4)
    sleep(4)
    assert waits == [4, 4, 2, 0]


def test_sleep_until_wakes_at_once_on_cancel() -> None:
    cancel = threading.Event()
    sleep = sleep_until(
        lambda event, s: event.wait(s), time.monotonic, time.monotonic() + 60, cancel
    )
    threading.Timer(0.05, cancel.set).start()
    started = time.monotonic()
    sleep(30)
    assert time.monotonic() - started < 5


def test_a_tenacity_loop_on_the_budget_takes_one_last_look_at_its_end(ticker: Ticker) -> None:
    cancel = threading.Event()
    end = ticker.t + 10
    attempts: list[float] = []

    def wait_for(event: threading.Event, seconds: float) -> bool:
        ticker.t += seconds
        return False

    def confirm() -> None:
        attempts.append(ticker.t - 100.0)
        raise ConnectionError("API unreachable")

    retrying = tenacity.Retrying(
        stop=stop_at(ticker, end, cancel),
        wait=tenacity.wait_fixed(4),
        sleep=sleep_until(wait_for, ticker, end, cancel),
        reraise=True,
    )
    with pytest.raises(ConnectionError):
        retrying(confirm)
    assert attempts == [0, 4, 8, 10]
