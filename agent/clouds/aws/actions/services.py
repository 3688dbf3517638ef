"""Clients of other AWS services (ELBv2, Auto Scaling) on the EC2 confirmation's footing.

The region comes from the instance identity document, the credentials from boto3's default
chain with the instance-profile fetch aimed at the configured metadata service, and
botocore's own retries are off, exactly as for the EC2 client: this only changes the
service name, its endpoint and what an access-denied message asks to grant.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agent.actions import ActionContext, CloudAction
from agent.clock import Clock
from agent.clouds.aws import api as ec2_api
from agent.clouds.aws.config import AwsConfig
from agent.confirmation import Unusable

LOG = logging.getLogger(__name__)

DENIED = frozenset(
    {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure"}
)


class Denied(Unusable):
    """The instance's role may not do this: said once, and the action stops."""


class AwsService(ec2_api.Ec2):
    """One boto3 client for ``service`` (``elbv2``, ``autoscaling``), built on first use."""

    def __init__(
        self, config: AwsConfig, clock: Clock, service: str, endpoint_url: str, grant: str
    ) -> None:
        super().__init__(config, clock)
        self._service = service
        self._endpoint_url = endpoint_url
        self._grant = grant
        self._lock = threading.Lock()  # a heartbeat thread and the drain share the client

    def client(self) -> Any:
        with self._lock:
            return self._build()

    def _build(self) -> Any:
        if self._client is None:
            ec2_api.Ec2.client(self)  # imports, logger levels, region, credential settings
            import boto3.session
            import botocore.config

            core = self._core_session()
            session = boto3.session.Session(botocore_session=core, region_name=self.region())
            self._client = session.client(
                self._service,
                region_name=self.region(),
                endpoint_url=self._endpoint_url or None,
                config=botocore.config.Config(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=self._config.api_timeout,
                    read_timeout=self._config.api_timeout,
                    user_agent_extra="preempt-agent",
                ),
            )
        return self._client

    def _core_session(self) -> Any:
        import botocore.session

        core = botocore.session.Session()
        core.set_config_variable("ec2_metadata_service_endpoint", self._config.metadata_url)
        core.set_config_variable("metadata_service_timeout", self._config.timeout)
        core.set_config_variable("metadata_service_num_attempts", ec2_api.IMDS_ATTEMPTS)
        return core

    def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One call; Transient (retry), Denied (grant this), Unusable (anything else)."""
        try:
            return self._call(operation, **kwargs)
        except Denied:
            raise
        except Unusable as exc:
            text = str(exc)
            code = text.split(": ", 1)[1].split(" ", 1)[0] if ": " in text else ""
            if code in DENIED:
                raise Denied(
                    f"{text.split(' (grant ', maxsplit=1)[0]} (grant {self._grant})"
                ) from None
            raise


class AwsAction(CloudAction[AwsService]):
    """An action on an AWS service other than EC2: its client is an :class:`AwsService`."""

    cloud = "aws"
    service = ""
    """The boto3 client's name (``elbv2``)."""
    grant = ""
    """What an access-denied message asks to grant."""

    def _connect(self, ctx: ActionContext) -> AwsService:
        return AwsService(
            self._cloud, ctx.clock, self.service, self._settings.endpoint_url, self.grant
        )
