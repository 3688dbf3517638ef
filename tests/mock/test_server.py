"""The mock metadata service must behave like the real ones, or the agent's tests prove nothing."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

import pytest
import requests

import agent
from agent.clouds.alibaba.mock import FLAVOR as ALIBABA
from agent.clouds.alibaba.mock import defaults as alibaba_defaults
from agent.clouds.aws.mock import FLAVOR as AWS
from agent.clouds.aws.mock import defaults as aws_defaults
from agent.clouds.aws.mock import spot_action as aws_spot_action
from agent.mock import Flavor, MockMetadataServer, rfc3339

TIMEOUT = 5.0
INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"


class FakeClock:
    """A clock the test moves by hand, so token expiry and set_at need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[AWS, ALIBABA], ids=lambda f: f.name)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return request.param


@pytest.fixture
def server(flavor: Flavor, clock: FakeClock) -> Iterator[MockMetadataServer]:
    with MockMetadataServer(flavor, clock=clock) as srv:
        yield srv


def get_token(srv: MockMetadataServer, ttl: str = "60", **headers: str) -> requests.Response:
    hdrs = {srv.flavor.ttl_header: ttl, **headers}
    return requests.put(srv.url + srv.flavor.token_path, headers=hdrs, timeout=TIMEOUT)


def token_of(srv: MockMetadataServer) -> str:
    resp = get_token(srv)
    assert resp.status_code == 200
    return resp.text


def get(srv: MockMetadataServer, path: str, token: str | None = None) -> requests.Response:
    headers = {} if token is None else {srv.flavor.token_header: token}
    return requests.get(srv.url + path, headers=headers, timeout=TIMEOUT)


# -- tokens -------------------------------------------------------------------------------------


def test_token_issued_and_accepted(server: MockMetadataServer) -> None:
    server.set("/latest/meta-data/instance-id", "i-abc")
    resp = get_token(server, "21600")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert len(resp.text) >= 20
    assert token_of(server) != resp.text
    answer = get(server, "/latest/meta-data/instance-id", resp.text)
    assert (answer.status_code, answer.text) == (200, "i-abc")
    assert answer.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("ttl", ["0", "21601", "-5", "abc", "1.5", ""])
def test_token_ttl_out_of_bounds_is_400(server: MockMetadataServer, ttl: str) -> None:
    assert get_token(server, ttl).status_code == 400


def test_token_ttl_bounds_accepted_and_missing_ttl_is_400(server: MockMetadataServer) -> None:
    assert get_token(server, "1").status_code == 200
    assert get_token(server, "21600").status_code == 200
    resp = requests.put(server.url + server.flavor.token_path, timeout=TIMEOUT)
    assert resp.status_code == 400


def test_token_put_with_forwarded_for_is_403(server: MockMetadataServer) -> None:
    assert get_token(server, **{"X-Forwarded-For": "10.0.0.1"}).status_code == 403


def test_unknown_token_is_401_even_when_tokens_are_optional(server: MockMetadataServer) -> None:
    server.set("/latest/meta-data/instance-id", "i-abc")
    assert get(server, "/latest/meta-data/instance-id", "not-a-token").status_code == 401
    server.token_required = False
    assert get(server, "/latest/meta-data/instance-id", "not-a-token").status_code == 401


def test_token_expires_on_the_injected_clock(server: MockMetadataServer, clock: FakeClock) -> None:
    server.set("/latest/meta-data/instance-id", "i-abc")
    token = get_token(server, "10").text
    clock.now += 9.9
    assert get(server, "/latest/meta-data/instance-id", token).status_code == 200
    clock.now += 0.1
    assert get(server, "/latest/meta-data/instance-id", token).status_code == 401
    assert get(server, "/latest/meta-data/instance-id", token_of(server)).status_code == 200


def test_expire_tokens(server: MockMetadataServer) -> None:
    server.set("/latest/meta-data/instance-id", "i-abc")
    token = token_of(server)
    server.expire_tokens()
    assert get(server, "/latest/meta-data/instance-id", token).status_code == 401


@pytest.mark.parametrize(("flv", "status"), [(AWS, 401), (ALIBABA, 403)], ids=["aws", "alibaba"])
def test_missing_token_status_per_flavor(flv: Flavor, status: int) -> None:
    with MockMetadataServer(flv) as srv:
        srv.set("/latest/meta-data/instance-id", "i-abc")
        assert get(srv, "/latest/meta-data/instance-id").status_code == status
    with MockMetadataServer(flv, token_required=False) as srv:
        srv.set("/latest/meta-data/instance-id", "i-abc")
        assert get(srv, "/latest/meta-data/instance-id").text == "i-abc"


def test_token_endpoint_status_simulates_no_token_endpoint(server: MockMetadataServer) -> None:
    server.token_endpoint_status = 404
    server.token_required = False
    server.set("/latest/meta-data/instance-id", "i-abc")
    assert get_token(server).status_code == 404
    assert get(server, "/latest/meta-data/instance-id").status_code == 200


def test_unknown_path_and_other_methods(server: MockMetadataServer) -> None:
    token = token_of(server)
    assert get(server, "/latest/meta-data/nothing-here", token).status_code == 404
    for method in ("POST", "DELETE", "PATCH", "HEAD"):
        resp = requests.request(method, server.url + "/latest/meta-data/", timeout=TIMEOUT)
        assert resp.status_code == 405, method
    assert get(server, server.flavor.token_path, token).status_code == 405
    assert requests.put(server.url + "/latest/meta-data/x", timeout=TIMEOUT).status_code == 405


# -- scripting ----------------------------------------------------------------------------------


def test_set_with_status_headers_and_removal(server: MockMetadataServer) -> None:
    token = token_of(server)
    server.set("/a", "body-a", status=202, headers={"X-Extra": "1"})
    resp = get(server, "/a", token)
    assert (resp.status_code, resp.text, resp.headers["X-Extra"]) == (202, "body-a", "1")
    server.set("/a", None)
    assert get(server, "/a", token).status_code == 404


def test_set_at_appears_on_the_clock(server: MockMetadataServer, clock: FakeClock) -> None:
    token = get_token(server, "21600").text
    path = "/latest/meta-data/autoscaling/target-lifecycle-state"
    server.set(path, "InService")
    server.set_at(path, "Terminated", at=clock.now + 30)
    server.set_at("/later", "here", at=clock.now + 60)
    assert get(server, path, token).text == "InService"
    assert get(server, "/later", token).status_code == 404
    clock.now += 30
    assert get(server, path, token).text == "Terminated"
    assert get(server, "/later", token).status_code == 404
    clock.now += 30
    assert get(server, "/later", token).text == "here"


def test_set_dynamic_computes_each_time(server: MockMetadataServer) -> None:
    token = token_of(server)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    calls = []

    def notice() -> str | None:
        calls.append(1)
        if len(calls) > 2:
            return None
        return aws_spot_action("terminate", start + timedelta(seconds=len(calls)))

    server.set_dynamic(INSTANCE_ACTION, notice)
    first = get(server, INSTANCE_ACTION, token).json()
    second = get(server, INSTANCE_ACTION, token).json()
    assert first == {"action": "terminate", "time": "2024-01-01T00:00:01Z"}
    assert second["time"] == "2024-01-01T00:00:02Z"
    assert get(server, INSTANCE_ACTION, token).status_code == 404


def test_fail_then_recover(server: MockMetadataServer) -> None:
    server.set("/a", "ok")
    server.fail(2, status=503, headers={"Retry-After": "1"})
    first = get_token(server)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "1")
    assert get(server, "/a").status_code == 503
    token = token_of(server)
    assert get(server, "/a", token).text == "ok"
    server.fail(1, status=429)
    assert get(server, "/a", token).status_code == 429
    assert get(server, "/a", token).status_code == 200


def test_refuse_then_accept_on_the_same_port(server: MockMetadataServer) -> None:
    server.set("/a", "ok")
    token = token_of(server)
    url = server.url
    with requests.Session() as session:  # a kept-alive connection must not survive refuse()
        assert session.get(url + "/a", headers={server.flavor.token_header: token}).ok
        server.refuse()
        with pytest.raises(requests.ConnectionError):
            session.get(url + "/a", timeout=TIMEOUT)
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/a", timeout=TIMEOUT)
        server.accept()
        assert server.url == url
        resp = session.get(url + "/a", headers={server.flavor.token_header: token}, timeout=5)
        assert resp.text == "ok"


def test_delay_holds_answers_and_stop_cuts_it_short(flavor: Flavor) -> None:
    srv = MockMetadataServer(flavor, token_required=False).start()
    try:
        srv.set("/a", "ok")
        srv.delay(30)
        with pytest.raises(requests.ReadTimeout):
            requests.get(srv.url + "/a", timeout=0.2)
        srv.wait_for_request(lambda r: r.path == "/a", timeout=TIMEOUT)
    finally:
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        stopper.join(timeout=TIMEOUT)
        assert not stopper.is_alive()


def test_request_log_and_wait_for_request(server: MockMetadataServer, clock: FakeClock) -> None:
    get(server, "/one")
    seen = len(server.requests)
    assert server.requests[0].method == "GET"
    assert server.requests[0].path == "/one"
    assert server.requests[0].time == clock.now
    with pytest.raises(TimeoutError):
        server.wait_for_request(lambda r: r.path == "/one", timeout=0.05, start=seen)

    threading.Thread(target=get, args=(server, "/two?x=1")).start()
    req = server.wait_for_request(lambda r: r.path == "/two", timeout=TIMEOUT, start=seen)
    assert req.query == "x=1"
    assert "User-Agent" in req.headers
    server.clear_requests()
    assert server.requests == []


# -- the control API ----------------------------------------------------------------------------


def test_control_endpoints(server: MockMetadataServer) -> None:
    control = server.url + "/__mock__/"
    body = {"path": INSTANCE_ACTION, "body": '{"action": "stop"}', "status": 200}
    assert requests.put(control + "path", json=body, timeout=TIMEOUT).status_code == 200
    token = token_of(server)
    assert get(server, INSTANCE_ACTION, token).json() == {"action": "stop"}

    body = {"path": INSTANCE_ACTION, "body": None}
    assert requests.put(control + "path", json=body, timeout=TIMEOUT).status_code == 200
    assert get(server, INSTANCE_ACTION, token).status_code == 404

    fail = {"count": 1, "status": 503, "headers": {"Retry-After": "2"}}
    assert requests.put(control + "fail", json=fail, timeout=TIMEOUT).ok
    assert get(server, INSTANCE_ACTION, token).status_code == 503
    assert requests.put(control + "expire-tokens", timeout=TIMEOUT).ok
    assert get(server, INSTANCE_ACTION, token).status_code == 401

    log = requests.get(control + "requests", timeout=TIMEOUT).json()
    assert [(r["method"], r["path"]) for r in log] == [
        ("PUT", server.flavor.token_path),
        ("GET", INSTANCE_ACTION),
        ("GET", INSTANCE_ACTION),
        ("GET", INSTANCE_ACTION),
        ("GET", INSTANCE_ACTION),
    ]
    assert requests.delete(control + "requests", timeout=TIMEOUT).ok
    assert requests.get(control + "requests", timeout=TIMEOUT).json() == []

    bad = requests.put(control + "path", data="{not json", timeout=TIMEOUT)
    assert bad.status_code == 400
    assert requests.put(control + "path", json={"body": "x"}, timeout=TIMEOUT).status_code == 400
    assert requests.put(control + "nope", json={}, timeout=TIMEOUT).status_code == 404


# -- helpers ------------------------------------------------------------------------------------


def test_rfc3339_and_spot_action() -> None:
    east = timezone(timedelta(hours=8))
    assert rfc3339(datetime(2017, 9, 18, 16, 22, 0, 123, tzinfo=east)) == "2017-09-18T08:22:00Z"
    assert rfc3339(datetime(2017, 9, 18, 8, 22)) == "2017-09-18T08:22:00Z"
    body = aws_spot_action("hibernate", datetime(2017, 9, 18, 8, 22, tzinfo=timezone.utc))
    assert json.loads(body) == {"action": "hibernate", "time": "2017-09-18T08:22:00Z"}


def test_defaults() -> None:
    with MockMetadataServer(AWS, token_required=False) as srv:
        aws_defaults(srv, instance_id="i-0aaa", region="eu-west-1", life_cycle="on-demand")
        assert get(srv, "/latest/meta-data/instance-id").text == "i-0aaa"
        assert get(srv, "/latest/meta-data/instance-life-cycle").text == "on-demand"
        doc = get(srv, "/latest/dynamic/instance-identity/document").json()
        assert doc["instanceId"] == "i-0aaa"
        assert doc["region"] == "eu-west-1"
        assert doc["availabilityZone"].startswith("eu-west-1")
        assert {"instanceType", "accountId"} <= set(doc)
    with MockMetadataServer(ALIBABA, token_required=False) as srv:
        alibaba_defaults(srv)
        assert get(srv, "/latest/meta-data/instance-id").text == "i-bp13znx0m0me8cquu0001"
        assert get(srv, "/latest/meta-data/region-id").text == "cn-hangzhou"


# -- running on its own -------------------------------------------------------------------------


def read_line(stream: IO[str], timeout: float) -> str:
    """Read one line, giving up after ``timeout`` seconds instead of hanging the suite."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no line from the mock process in time") from None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_module_runs_as_a_process(sig: signal.Signals) -> None:
    root = Path(agent.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    argv = [sys.executable, "-m", "agent.mock", "--flavor", "alibaba"]
    argv += ["--host", "127.0.0.1", "--port", "0", "--instance-id", "i-test", "--region", "r-1"]
    proc = subprocess.Popen(
        argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = read_line(proc.stdout, timeout=10)
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        ttl = {ALIBABA.ttl_header: "60"}
        token = requests.put(url + ALIBABA.token_path, headers=ttl, timeout=TIMEOUT).text
        hdr = {ALIBABA.token_header: token}
        resp = requests.get(url + "/latest/meta-data/region-id", headers=hdr, timeout=TIMEOUT)
        assert resp.text == "r-1"
        resp = requests.get(url + "/latest/meta-data/instance-id", timeout=TIMEOUT)
        assert resp.status_code == 403
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert token not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
