"""Cloud detection from fake sysfs trees, and the metadata probe against the mock on loopback."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from agent.clouds.alibaba.config import AlibabaConfig
from agent.clouds.alibaba.mock import FLAVOR as ALIBABA
from agent.clouds.aws.config import AwsConfig
from agent.clouds.aws.mock import FLAVOR as AWS
from agent.config import Config
from agent.detect import Detection, detect, metadata_probe, read_dmi
from agent.mock import MockMetadataServer
from agent.mock import server as mock_server

DMI = "class/dmi/id"
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77"


def sysfs(root: Path, files: dict[str, str]) -> Path:
    """A fake /sys holding ``files`` (paths relative to it), each with a trailing newline."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def never() -> Optional[Detection]:
    raise AssertionError("the probe must not be called")


# -- one rule at a time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cloud", "name", "value"),
    [
        ("aws", f"{DMI}/sys_vendor", "Amazon EC2"),
        ("aws", f"{DMI}/board_vendor", "Amazon EC2"),
        ("aws", f"{DMI}/board_asset_tag", "i-0123456789abcdef0"),
        ("aws", f"{DMI}/board_asset_tag", "i-0123abcd"),
        ("aws", "hypervisor/uuid", "ec2e1916-9099-7caf-fd21-012345abcdef"),
        ("aws", f"{DMI}/product_uuid", "EC2E1916-9099-7CAF-FD21-012345ABCDEF"),
        ("aws", f"{DMI}/product_uuid", "45E12AEC-DCD1-B213-94ED-012345ABCDEF"),
        ("aws", "hypervisor/uuid", "45e12aec-dcd1-b213-94ed-012345abcdef"),
        ("aws", f"{DMI}/bios_version", "4.11.amazon"),
        ("alibaba", f"{DMI}/product_name", "Alibaba Cloud ECS"),
        ("alibaba", f"{DMI}/sys_vendor", "Alibaba Cloud"),
        ("gcp", f"{DMI}/product_name", "Google Compute Engine"),
        ("gcp", f"{DMI}/product_name", "Google"),
        ("azure", f"{DMI}/chassis_asset_tag", AZURE_TAG),
        ("tencent", f"{DMI}/sys_vendor", "Tencent Cloud"),
        ("oracle", f"{DMI}/chassis_asset_tag", "OracleCloud.com"),
        ("huawei", f"{DMI}/chassis_asset_tag", "HUAWEICLOUD"),
    ],
)
def test_each_rule(tmp_path: Path, cloud: str, name: str, value: str) -> None:
    root = sysfs(tmp_path, {name: value})
    found = detect(root, never)
    assert found.cloud == cloud
    assert found.evidence == f"{root / name}={value!r}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (f"{DMI}/sys_vendor", "QEMU"),
        (f"{DMI}/sys_vendor", "amazon ec2 lookalike"),
        (f"{DMI}/product_name", "Standard PC (i440FX + PIIX, 1996)"),
        (f"{DMI}/product_name", "Alibaba Cloud ECS something"),
        # An Alibaba instance id is not an EC2 one.
        (f"{DMI}/board_asset_tag", "i-bp13znx0m0me8cquu0001"),
        (f"{DMI}/board_asset_tag", "i-0123"),
        (f"{DMI}/product_uuid", "9d2f4c1e-6a3b-4f0e-8c7d-2b1a0e9f8d7c"),
        (f"{DMI}/product_uuid", "not-a-uuid"),
        ("hypervisor/uuid", ""),
        (f"{DMI}/bios_version", "1.16.0-debian"),
        (f"{DMI}/chassis_asset_tag", "No Asset Tag"),
    ],
)
def test_near_misses_are_no_evidence(tmp_path: Path, name: str, value: str) -> None:
    assert detect(sysfs(tmp_path, {name: value})) == Detection(None, "no cloud evidence in DMI")


# -- whole machines ------------------------------------------------------------------------


def test_nitro_instance_lists_all_its_evidence(tmp_path: Path) -> None:
    root = sysfs(
        tmp_path,
        {
            f"{DMI}/sys_vendor": "Amazon EC2",
            f"{DMI}/board_vendor": "Amazon EC2",
            f"{DMI}/board_asset_tag": "i-0123456789abcdef0",
            f"{DMI}/product_name": "m5.large",
            f"{DMI}/bios_vendor": "Amazon EC2",
            f"{DMI}/bios_version": "1.0",
            f"{DMI}/chassis_asset_tag": "Amazon EC2",
        },
    )
    found = detect(root, never)
    assert found.cloud == "aws"
    assert f"{root}/{DMI}/sys_vendor='Amazon EC2'" in found.evidence
    assert f"{root}/{DMI}/board_vendor='Amazon EC2'" in found.evidence
    assert f"{root}/{DMI}/board_asset_tag='i-0123456789abcdef0'" in found.evidence


def test_ecs_instance(tmp_path: Path) -> None:
    root = sysfs(
        tmp_path,
        {
            f"{DMI}/sys_vendor": "Alibaba Cloud",
            f"{DMI}/product_name": "Alibaba Cloud ECS",
            f"{DMI}/product_version": "pc-i440fx-2.1",
            f"{DMI}/board_asset_tag": "i-bp13znx0m0me8cquu0001",
            f"{DMI}/bios_version": "449e491",
        },
    )
    found = detect(root, never)
    assert found.cloud == "alibaba"
    assert found.evidence == (
        f"{root}/{DMI}/product_name='Alibaba Cloud ECS', {root}/{DMI}/sys_vendor='Alibaba Cloud'"
    )


def test_empty_tree_and_missing_root(tmp_path: Path) -> None:
    assert detect(tmp_path) == Detection(None, "no cloud evidence in DMI")
    assert detect(tmp_path / "does-not-exist").cloud is None


def test_conflicting_evidence_is_not_guessed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = sysfs(
        tmp_path,
        {f"{DMI}/sys_vendor": "Amazon EC2", f"{DMI}/product_name": "Alibaba Cloud ECS"},
    )
    with caplog.at_level(logging.WARNING):
        found = detect(root, never)
    assert found.cloud is None
    assert found.evidence.startswith("conflicting evidence: ")
    assert "aws: " in found.evidence
    assert "alibaba: " in found.evidence
    assert "sys_vendor='Amazon EC2'" in found.evidence
    assert "product_name='Alibaba Cloud ECS'" in found.evidence
    assert "more than one cloud" in caplog.text


def test_unreadable_files_are_no_evidence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """product_uuid and product_serial are root-only; a directory stands for any other OSError."""
    root = sysfs(
        tmp_path,
        {
            f"{DMI}/product_uuid": "EC2E1916-9099-7CAF-FD21-012345ABCDEF",
            f"{DMI}/product_serial": "ec2-serial",
        },
    )
    (root / "hypervisor" / "uuid").mkdir(parents=True)
    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name in ("product_uuid", "product_serial"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert detect(root) == Detection(None, "no cloud evidence in DMI")
    sysfs(root, {f"{DMI}/sys_vendor": "Amazon EC2"})
    assert detect(root).cloud == "aws"
    assert read_dmi(root, "product_uuid") == ""


def test_undecodable_bytes_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / DMI / "sys_vendor"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe\x00Amazon")
    assert detect(tmp_path).cloud is None
    assert read_dmi(tmp_path, "sys_vendor").endswith("Amazon")


# -- the probe hook ------------------------------------------------------------------------


def test_probe_is_asked_only_when_dmi_is_silent(tmp_path: Path) -> None:
    calls: list[int] = []

    def probe() -> Optional[Detection]:
        calls.append(1)
        return Detection("alibaba", "probe said so")

    assert detect(tmp_path, probe) == Detection("alibaba", "probe said so")
    assert calls == [1]
    sysfs(tmp_path, {f"{DMI}/sys_vendor": "Amazon EC2"})
    assert detect(tmp_path, probe).cloud == "aws"
    assert calls == [1]


def test_probe_without_answer(tmp_path: Path) -> None:
    found = detect(tmp_path, lambda: None)
    assert found.cloud is None
    assert "no metadata service answered" in found.evidence


def test_no_probe_means_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("detect() without a probe opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert detect(tmp_path).cloud is None
    assert detect(sysfs(tmp_path, {f"{DMI}/sys_vendor": "Alibaba Cloud"})).cloud == "alibaba"


# -- the metadata probe against the mock ------------------------------------------------------


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def aws_server() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(AWS) as srv:
        yield srv


@pytest.fixture
def alibaba_server() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(ALIBABA) as srv:
        yield srv


def probe_config(aws_url: str, alibaba_url: str) -> Config:
    return Config(
        sections={
            "aws": AwsConfig(metadata_url=aws_url),
            "alibaba": AlibabaConfig(metadata_url=alibaba_url),
        }
    )


def test_probe_finds_aws(
    aws_server: MockMetadataServer, closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    found = metadata_probe(probe_config(aws_server.url, closed_url))()
    assert found is not None
    assert found.cloud == "aws"
    assert aws_server.url + "/latest/api/token" in found.evidence
    (put,) = aws_server.requests
    assert put.method == "PUT"
    assert put.headers.get(AWS.ttl_header) == "60"
    assert "aws metadata token endpoint" in caplog.text


def test_probe_finds_alibaba_after_aws_is_refused(
    alibaba_server: MockMetadataServer, closed_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    found = metadata_probe(probe_config(closed_url, alibaba_server.url))()
    assert found is not None
    assert found.cloud == "alibaba"
    (put,) = alibaba_server.requests
    assert put.headers.get(ALIBABA.ttl_header) == "60"
    assert "alibaba metadata token endpoint" in caplog.text


def test_probe_tells_the_services_apart_by_header(alibaba_server: MockMetadataServer) -> None:
    """Both URLs on one Alibaba service: the AWS-style request is refused (400), Alibaba's not."""
    found = metadata_probe(probe_config(alibaba_server.url, alibaba_server.url))()
    assert found is not None
    assert found.cloud == "alibaba"
    assert [r.method for r in alibaba_server.requests] == ["PUT", "PUT"]


def test_probe_on_aws_never_asks_alibaba(
    aws_server: MockMetadataServer, alibaba_server: MockMetadataServer
) -> None:
    found = metadata_probe(probe_config(aws_server.url, alibaba_server.url))()
    assert found is not None
    assert found.cloud == "aws"
    assert alibaba_server.requests == []


def test_probe_with_nothing_listening(tmp_path: Path, closed_url: str) -> None:
    probe = metadata_probe(probe_config(closed_url, closed_url))
    assert probe() is None
    found = detect(tmp_path, probe)
    assert found.cloud is None
    assert "no metadata service answered" in found.evidence


def test_probe_gives_up_quickly_on_a_hung_service(alibaba_server: MockMetadataServer) -> None:
    alibaba_server.delay(10)
    started = time.monotonic()
    found = metadata_probe(probe_config(alibaba_server.url, alibaba_server.url))()
    elapsed = time.monotonic() - started
    assert found is None
    assert elapsed < 3.0  # two half-second attempts, never the ten-second hang
    alibaba_server.delay(0)


def test_probe_ignores_proxy_settings(
    alibaba_server: MockMetadataServer, closed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, closed_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    found = metadata_probe(probe_config(closed_url, alibaba_server.url))()
    assert found is not None
    assert found.cloud == "alibaba"


def test_probe_does_not_log_the_token(
    aws_server: MockMetadataServer,
    closed_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mock_server.secrets, "token_urlsafe", lambda n: "SeCrEt-ToKeN")
    caplog.set_level(logging.DEBUG)
    found = metadata_probe(probe_config(aws_server.url, closed_url))()
    assert found is not None
    assert caplog.records
    assert "SeCrEt-ToKeN" not in caplog.text
    assert "SeCrEt-ToKeN" not in found.evidence
