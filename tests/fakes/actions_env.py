"""Shared pieces of the action tests: moto's server on loopback, AWS credentials that reach
nothing real, notices and action contexts on a fake clock."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Optional

import pytest
from moto.server import ThreadedMotoServer

from agent.actions import ActionContext
from agent.clock import Clock
from agent.notice import ASG_TERMINATION, SPOT_INTERRUPTION, Notice
from tests.fakes.clock import FakeClock


def refused_port() -> int:
    """A loopback port nothing listens on: a connection there is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="package")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def cloud_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy keys, no config files, botocore's IMDS default aimed at a refused port, and no
    SDK keys or proxies from the environment."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "ALIYUN_ACCESS_KEY_ID",
        "ALIYUN_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{refused_port()}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def notice(provider: str, instance_id: str, clock: Clock, kind: str = SPOT_INTERRUPTION) -> Notice:
    now = clock.now()
    return Notice(
        provider=provider,
        kind=kind,
        action="terminate",
        instance_id=instance_id,
        event_id=f"{provider}:{instance_id}:{kind}",
        deadline=None if kind == ASG_TERMINATION else now + timedelta(minutes=2),
        raw="{}",
        detected_at=now,
    )


def context(
    the_notice: Notice,
    clock: Clock,
    *,
    seconds: float = 600.0,
    phase: str = "drain",
    dry_run: bool = False,
    cancel: Optional[threading.Event] = None,
) -> ActionContext:
    """A run that ends ``seconds`` from now on ``clock``."""
    end = clock.monotonic() + seconds
    return ActionContext(
        notice=the_notice,
        phase=phase,
        end=lambda: end,
        clock=clock,
        dry_run=dry_run,
        cancel=cancel or threading.Event(),
        config=None,
    )
