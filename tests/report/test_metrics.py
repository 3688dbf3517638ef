"""Prometheus metrics, read back with prometheus_client's own parser."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__, report
from agent.config import ConfigError, parse
from agent.report.metrics import MetricsReporter
from tests.report.conftest import make_notice, result
from tests.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def after_a_notice(metrics: MetricsReporter) -> None:
    notice = make_notice(seconds=100.0)
    assert notice.deadline is not None
    metrics.polled("aws-spot", True)
    metrics.polled("aws-rebalance", False)
    metrics.polled("aws-rebalance", False)
    metrics.notice(notice, notice.deadline)
    metrics.hook_result(notice, "drain", result("10-stop", "ok", 2.0))
    metrics.hook_result(notice, "drain", result("action:aws-elb", "failed", 0.3, 1))
    metrics.outcome(notice, "drained", {})
    metrics.outcome(notice, "confirmed", {})


def check(found: Samples) -> None:
    notices, runs = "preempt_agent_notices_total", "preempt_agent_hook_runs_total"
    assert value(found, notices, provider="aws", kind="spot-interruption") == 1
    assert value(found, notices, provider="aws", kind="scheduled-maintenance") == 0
    assert value(found, runs, hook="10-stop", outcome="ok") == 1
    assert value(found, runs, hook="10-stop", outcome="failed") == 0
    assert value(found, runs, hook="action:aws-elb", outcome="failed") == 1
    assert value(found, "preempt_agent_hook_duration_seconds_count") == 2
    assert value(found, "preempt_agent_hook_duration_seconds_sum") == pytest.approx(2.3)
    assert value(found, "preempt_agent_metadata_errors_total", watcher="aws-rebalance") == 2
    assert value(found, "preempt_agent_metadata_errors_total", watcher="aws-spot") == 0
    assert time.time() - value(found, "preempt_agent_last_poll_timestamp_seconds") < 60
    assert 90 <= value(found, "preempt_agent_drain_seconds_left") <= 100
    assert value(found, "preempt_agent_info", version=__version__, provider="aws") == 1
    for name, labels in found:  # low cardinality: no ids as labels
        assert not {"event_id", "instance_id"} & {k for k, _ in labels}, name


def test_textfile_and_endpoint_after_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "preempt-agent.prom"
    config = parse(f'[metrics]\ntextfile = "{path}"\n')
    assert config.metrics.textfile == str(path)
    metrics = MetricsReporter("aws", str(path), "127.0.0.1:0")
    try:
        assert metrics.address is not None
        before = samples(path.read_text())
        notices = "preempt_agent_notices_total"
        assert value(before, notices, provider="aws", kind="spot-interruption") == 0
        after_a_notice(metrics)
        wait_until(
            lambda: samples(path.read_text()).get(
                ("preempt_agent_drain_seconds_left", frozenset())
            ),
            what="the textfile after the drain",
        )
        check(samples(path.read_text()))
        host, port = metrics.address
        answer = requests.get(f"http://{host}:{port}/metrics", timeout=5)
        assert answer.status_code == 200
        check(samples(answer.text))
    finally:
        metrics.close(1.0)
    assert not list(tmp_path.glob("*.tmp*")), "the textfile is written through a temporary file"


def test_polls_alone_do_not_rewrite_the_textfile(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    metrics = MetricsReporter("aws", str(path), write_every=3600)
    try:
        first = path.read_text()
        for _ in range(200):
            metrics.polled("aws-spot", True)
        assert not metrics._urgent.is_set(), "a poll must not wake the writer"
        assert path.read_text() == first
        notice = make_notice()
        assert notice.deadline is not None
        metrics.notice(notice, notice.deadline)  # an event writes at once
        wait_until(lambda: path.read_text() != first, what="the write at the notice")
        assert value(samples(path.read_text()), "preempt_agent_last_poll_timestamp_seconds") > 0
    finally:
        metrics.close(1.0)


def test_build_fans_out_to_metrics(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    config = parse(f'state_dir = "{tmp_path}"\n[metrics]\ntextfile = "{path}"\n')
    reporter = report.build(config, tmp_path, "alibaba")
    reporter.close(1.0)
    found = samples(path.read_text())
    assert value(found, "preempt_agent_info", version=__version__, provider="alibaba") == 1


def test_a_clear_error_when_prometheus_client_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    config = parse(f'[metrics]\ntextfile = "{tmp_path}/m.prom"\n')
    with pytest.raises(ConfigError, match="prometheus_client is not installed"):
        report.build(config, tmp_path, "aws")


def test_listen_on_a_taken_port_is_an_error_naming_the_key(tmp_path: Path) -> None:
    first = MetricsReporter("aws", listen="127.0.0.1:0")
    try:
        assert first.address is not None
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            MetricsReporter("aws", listen=f"127.0.0.1:{first.address[1]}")
    finally:
        first.close(1.0)
