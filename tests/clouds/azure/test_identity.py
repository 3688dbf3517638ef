"""Azure: the VM's identity for webhooks, from the compute document on the IMDS mock."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agent.clock import Clock
from agent.clouds.azure import AzureCloud, parse
from agent.clouds.azure.config import AzureConfig
from agent.clouds.azure.mock import COMPUTE_PATH, AzureMockServer, defaults

EXPECTED = {"region": "westeurope", "zone": "1", "instance_type": "Standard_D2s_v3"}


@pytest.fixture
def azure() -> Iterator[AzureMockServer]:
    with AzureMockServer() as server:
        defaults(server, "vm-spot", region="westeurope")
        yield server


def section(url: str) -> AzureConfig:
    return AzureConfig(metadata_url=url, timeout=1.0)


def test_identity_comes_from_the_compute_document(azure):
    assert AzureCloud().identity(section(azure.url), Clock()) == EXPECTED
    (request,) = [r for r in azure.requests if r.path == COMPUTE_PATH]
    assert request.headers.get("Metadata") == "true"
    assert request.query == "api-version=2021-02-01"


def test_a_vm_outside_availability_zones_has_no_zone(azure):
    azure.set(COMPUTE_PATH, json.dumps({"location": "westeurope", "zone": "", "vmSize": "B1s"}))
    found = AzureCloud().identity(section(azure.url), Clock())
    assert found == {"region": "westeurope", "instance_type": "B1s"}


@pytest.mark.parametrize("body", [None, "not json", "[1, 2]"])
def test_no_usable_document_gives_nothing(azure, body):
    azure.set(COMPUTE_PATH, body)
    assert AzureCloud().identity(section(azure.url), Clock()) == {}


def test_a_throttling_service_gives_nothing_and_does_not_raise(azure):
    azure.fail(5, 429)
    assert AzureCloud().identity(section(azure.url), Clock()) == {}


def test_parse_compute_keeps_only_strings():
    body = json.dumps({"location": "eastus", "zone": 2, "vmSize": "Standard_F2s"})
    assert parse.parse_compute(body) == {
        "region": "eastus",
        "zone": None,
        "instance_type": "Standard_F2s",
    }
