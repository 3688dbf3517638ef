"""AWS EC2: spot, rebalance, maintenance and Auto Scaling notices from IMDSv2, confirmed
through the EC2 API.

``watchers`` (paths, payload parsing), ``api`` (EC2 confirmation, boto3 imported there
only), ``config`` (the ``[aws]`` section), ``detect`` (DMI evidence), ``mock`` (the mock
metadata service's flavour).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from agent.clock import Clock
from agent.clouds._shared.ec2_protocol import ask_once, reuse
from agent.clouds._shared.token_client import TOKEN_PATH
from agent.clouds.aws import detect, watchers
from agent.clouds.aws.config import AwsConfig
from agent.clouds.base import Cloud, MetadataProbe, Watcher, identity_values

if TYPE_CHECKING:
    from agent.confirmation import Observation
    from agent.notice import Notice

LOG = logging.getLogger(__name__)

PROBE_TTL = "60"


class AwsCloud(Cloud):
    name = watchers.NAME
    section = AwsConfig
    api = "EC2 API"
    dmi = detect.DMI
    mock_module = "agent.clouds.aws.mock"

    def __init__(self) -> None:
        self.instance: Optional[watchers.Instance] = None
        """The instance behind the watchers, so confirmation reuses its token."""

    def watchers(self, section: AwsConfig, clock: Clock) -> list[Watcher]:
        instance = self.instance = watchers.Instance(section, clock)
        return list(watchers.build(section, instance))

    def actions(self, config: Any) -> list[Any]:
        from agent.clouds.aws.actions import elb, lifecycle

        return elb.ElbAction.build(config) + lifecycle.LifecycleAction.build(config)

    def preload(self) -> None:
        from agent.clouds.aws import api  # noqa: F401

    def looker(
        self, notice: Notice, section: AwsConfig, clock: Clock
    ) -> Optional[Callable[[], Observation]]:
        from agent.clouds.aws import api

        instance = reuse(self.instance, section.metadata_url, watchers.Instance)
        ec2 = api.Ec2(section, clock, instance)
        return lambda: ec2.look(notice.instance_id)

    def interrupted_now(self, section: AwsConfig, clock: Clock, timeout: float) -> Optional[Notice]:
        # Four requests at most (token, instance id, two paths) share the time.
        quick = dataclasses.replace(section, timeout=max(0.05, timeout / 4))
        return ask_once(watchers.Instance(quick, clock), watchers.TERMINATION_PATHS)

    def identity(self, section: AwsConfig, clock: Clock) -> dict[str, str]:
        """Region, zone and type from the instance identity document: one GET (and a token,
        unless the watchers hold one), through the watchers' client when it serves this URL."""
        instance = reuse(self.instance, section.metadata_url, watchers.Instance)
        own = instance is None
        if instance is None:
            instance = watchers.Instance(section, clock)
        try:
            body = instance.client.get(watchers.IDENTITY)
            if body is None:
                LOG.warning("no instance identity document: webhooks go without region and zone")
                return {}
            document = watchers.parse_identity(body)
        except Exception as exc:  # MetadataError, ValueError: never raised to the caller
            LOG.warning("cannot read the instance identity document: %s", exc)
            return {}
        finally:
            if own:
                instance.client.close()
        return identity_values(
            region=document.get("region"),
            zone=document.get("availabilityZone"),
            instance_type=document.get("instanceType"),
        )

    def probe(self, section: Any) -> Optional[MetadataProbe]:
        url = section.metadata_url.rstrip("/") + TOKEN_PATH
        return MetadataProbe(url, {watchers.TTL_HEADER: PROBE_TTL})


CLOUD = AwsCloud()
