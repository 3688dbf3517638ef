"""Confirming an AWS interruption through the EC2 API, with boto3 imported only here.

Fastest signal first: the Spot request status changes the moment EC2 decides to interrupt
(``marked-for-termination`` and friends), while the instance reads ``running`` until the
notice time; after that DescribeInstances shows it shutting down or stopping. A Spot request
back at ``fulfilled`` after the notice has left metadata is a withdrawn interruption.

Credentials come from boto3's default chain, but its instance-profile fetch asks the
agent's configured metadata service (never a hard-wired 169.254.169.254), with the agent's
timeout and a few attempts instead of botocore's 1 s and one. botocore's own retries are
off: the shared loop in :mod:`agent.confirmation` backs off on the agent's clock.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from typing import Any, Optional

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.aws import watchers as aws
from agent.clouds.aws.config import AwsConfig
from agent.confirmation import Look, Observation, Transient, Unusable

LOG = logging.getLogger(__name__)

IMDS_ATTEMPTS = 3
"""Instance-profile credential fetches (botocore's default is a single one)."""

SPOT_INTERRUPTED = ("marked-for-", "instance-terminated-", "instance-stopped-")
"""Spot request status code prefixes that mean EC2 is interrupting (or has interrupted) it:
marked-for-termination, marked-for-stop, instance-terminated-no-capacity,
instance-stopped-by-experiment, ... New codes of these families count too."""
SPOT_FINE = frozenset({"fulfilled", "request-canceled-and-instance-running"})
STATE_NAMES = {
    0: "pending",
    16: "running",
    32: "shutting-down",
    48: "terminated",
    64: "stopping",
    80: "stopped",
}
GOING = frozenset({"shutting-down", "terminated", "stopping", "stopped"})

RETRY_CODES = frozenset(
    {
        # Eventual consistency: a new or just-changed instance may be unknown for a while.
        "InvalidInstanceID.NotFound",
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "BandwidthLimitExceeded",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        # Instance-profile credentials rotate; botocore fetches new ones on the next call.
        "ExpiredToken",
        "RequestExpired",
    }
)


class Ec2:
    """An EC2 client built on first use, and one look at an instance."""

    def __init__(
        self, config: AwsConfig, clock: Clock, instance: Optional[aws.Instance] = None
    ) -> None:
        self._config = config
        self._instance = instance or aws.Instance(config, clock)
        self._region: Optional[str] = None
        self._client: Any = None
        self._errors: Any = None

    def region(self) -> str:
        """The region from the instance identity document, read once."""
        if self._region is None:
            try:
                body = self._instance.client.get(aws.IDENTITY)
            except MetadataError as exc:
                raise Transient(f"cannot read the instance identity document: {exc}") from None
            if body is None:
                raise Unusable(f"no instance identity document at {self._config.metadata_url}")
            try:
                self._region = str(aws.parse_identity(body)["region"])
            except ValueError as exc:
                raise Unusable(str(exc)) from None
            LOG.info("AWS APIs in region %s", self._region)
        return self._region

    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3.session
                import botocore.config
                import botocore.exceptions
                import botocore.session
            except ImportError as exc:
                raise Unusable(
                    f"boto3 cannot be imported ({exc}): install python3-boto3, "
                    "or preempt-agent[aws] with pip"
                ) from None
            # botocore logs whole signed requests (security token included) at debug level.
            for name in ("botocore", "boto3"):
                logger = logging.getLogger(name)
                logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
            region = self.region()
            _bypass_proxy(self._config.metadata_url)
            core = botocore.session.Session()
            core.set_config_variable("ec2_metadata_service_endpoint", self._config.metadata_url)
            core.set_config_variable("metadata_service_timeout", self._config.timeout)
            core.set_config_variable("metadata_service_num_attempts", IMDS_ATTEMPTS)
            session = boto3.session.Session(botocore_session=core, region_name=region)
            self._client = session.client(
                "ec2",
                region_name=region,
                endpoint_url=self._config.endpoint_url or None,
                config=botocore.config.Config(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=self._config.api_timeout,
                    read_timeout=self._config.api_timeout,
                    user_agent_extra="preempt-agent",
                ),
            )
            self._errors = botocore.exceptions
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        client = self.client()
        errors = self._errors
        try:
            result: dict[str, Any] = getattr(client, operation)(**kwargs)
        except errors.ClientError as exc:
            raise _classify(operation, exc.response) from None
        except (
            errors.NoCredentialsError,
            errors.PartialCredentialsError,
            errors.CredentialRetrievalError,
        ):
            raise Unusable(
                "no AWS credentials: none in the environment or the AWS config files, and no "
                f"instance profile at {self._config.metadata_url} (attach an IAM role)"
            ) from None
        except (errors.ConnectionError, errors.HTTPClientError) as exc:
            raise Transient(f"{operation}: {type(exc).__name__}: {exc}") from None
        return result

    def look(self, instance_id: str) -> Observation:
        """One look: the Spot request first, then the instance state."""
        requests = self._call(
            "describe_spot_instance_requests",
            Filters=[{"Name": "instance-id", "Values": [instance_id]}],
        ).get("SpotInstanceRequests", [])
        mine = [r for r in requests if r.get("InstanceId") == instance_id] or requests
        spot = str(mine[-1].get("Status", {}).get("Code", "")) if mine else ""
        request_id = mine[-1].get("SpotInstanceRequestId", "?") if mine else ""
        if spot.startswith(SPOT_INTERRUPTED):
            return Observation(Look.INTERRUPTED, f"spot request {request_id} is {spot}")
        described = self._call("describe_instances", InstanceIds=[instance_id])
        found = [
            i
            for r in described.get("Reservations", [])
            for i in r.get("Instances", [])
            if i.get("InstanceId") == instance_id
        ]
        if not found:
            raise Transient(f"{instance_id} is not in DescribeInstances yet")
        state = found[0].get("State", {})
        name = STATE_NAMES.get(int(state.get("Code", -1)) & 0xFF, str(state.get("Name", "?")))
        reason = found[0].get("StateReason", {}).get("Code")
        spot_text = f"spot request {request_id} {spot}" if spot else "no spot request"
        seen = f"instance {name}{f' ({reason})' if reason else ''}, {spot_text}"
        if name in GOING:
            return Observation(Look.INTERRUPTED, seen)
        if name == "running" and (not spot or spot in SPOT_FINE):
            return Observation(Look.FINE, seen)
        return Observation(Look.PENDING, seen)


def _classify(operation: str, response: dict[str, Any]) -> Exception:
    """A ClientError into Transient (look again) or Unusable (say so, stop)."""
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # Signature errors may quote the canonical request, security token included: drop them.
    message = "" if "Signature" in code else str(error.get("Message", ""))[:200]
    text = f"{operation}: {code or 'error'} (HTTP {status}){f': {message}' if message else ''}"
    if code in RETRY_CODES or status >= 500 or status == 429:
        return Transient(text)
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        text += " (grant ec2:DescribeSpotInstanceRequests and ec2:DescribeInstances)"
    return Unusable(text)


def _bypass_proxy(metadata_url: str) -> None:
    """botocore's credential fetch from instance metadata honours HTTP(S)_PROXY, unlike the
    agent's own client: list the metadata host in NO_PROXY so a token never goes to a proxy."""
    host = urllib.parse.urlsplit(metadata_url).hostname
    current = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if host and host not in [h.strip() for h in current.split(",")]:
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(filter(None, [current, host]))
