"""Alibaba Cloud ECS: the preemptible-instance release notice from instance metadata
(hardened mode), confirmed through the ECS API.

``watchers`` (paths, payload parsing), ``api`` (ECS confirmation, the aliyun SDK imported
there only), ``config`` (the ``[alibaba]`` section), ``detect`` (DMI evidence), ``mock``
(the mock metadata service's flavour).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from agent.clock import Clock
from agent.clouds._shared.ec2_protocol import ask_once, reuse
from agent.clouds._shared.token_client import TOKEN_PATH
from agent.clouds.alibaba import detect, watchers
from agent.clouds.alibaba.config import AlibabaConfig
from agent.clouds.base import Cloud, MetadataProbe, Watcher, identity_values

if TYPE_CHECKING:
    from agent.confirmation import Observation
    from agent.notice import Notice

LOG = logging.getLogger(__name__)

PROBE_TTL = "60"


class AlibabaCloud(Cloud):
    name = watchers.NAME
    section = AlibabaConfig
    api = "ECS API"
    dmi = detect.DMI
    mock_module = "agent.clouds.alibaba.mock"

    def __init__(self) -> None:
        self.instance: Optional[watchers.Instance] = None
        """The instance behind the watchers, so confirmation reuses its cached identity."""

    def watchers(self, section: AlibabaConfig, clock: Clock) -> list[Watcher]:
        instance = self.instance = watchers.Instance(section, clock)
        return list(watchers.build(section, instance))

    def actions(self, config: Any) -> list[Any]:
        from agent.clouds.alibaba.actions import slb

        return slb.SlbAction.build(config)

    def preload(self) -> None:
        from agent.clouds.alibaba import api  # noqa: F401

    def looker(
        self, notice: Notice, section: AlibabaConfig, clock: Clock
    ) -> Optional[Callable[[], Observation]]:
        from agent.clouds.alibaba import api

        instance = reuse(self.instance, section.metadata_url, watchers.Instance)
        ecs = api.Ecs(section, clock, instance)
        return lambda: ecs.look(notice)

    def interrupted_now(
        self, section: AlibabaConfig, clock: Clock, timeout: float
    ) -> Optional[Notice]:
        # Four requests at most (token, instance id, region id, the path) share the time.
        quick = dataclasses.replace(section, timeout=max(0.05, timeout / 4))
        paths = [(watchers.TERMINATION_TIME, watchers.parser(section))]
        return ask_once(watchers.Instance(quick, clock), paths)

    def identity(self, section: AlibabaConfig, clock: Clock) -> dict[str, str]:
        """region-id (cached by the watchers), zone-id and instance/instance-type: at most
        three GETs (and a token), each read once, through the watchers' client."""
        instance = reuse(self.instance, section.metadata_url, watchers.Instance)
        own = instance is None
        if instance is None:
            instance = watchers.Instance(section, clock)
        try:
            return identity_values(**instance.read_identity())
        except Exception as exc:  # never raised to the caller
            LOG.warning("cannot read the instance's identity: %s", exc)
            return {}
        finally:
            if own:
                instance.client.close()

    def probe(self, section: Any) -> Optional[MetadataProbe]:
        url = section.metadata_url.rstrip("/") + TOKEN_PATH
        return MetadataProbe(url, {watchers.TTL_HEADER: PROBE_TTL})


CLOUD = AlibabaCloud()
