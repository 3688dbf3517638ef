"""Confirming an Alibaba Cloud release through the ECS API (aliyun SDK, imported only here).

DescribeInstances shows a preemptible instance that is being reclaimed with the operation
lock ``Recycling``; with the Stop behaviour it then reads Stopping/Stopped, and a released
instance drops out of the result. A Running instance without the lock, once the notice has
left metadata, is a withdrawn release.

Credentials: configured keys, or the instance RAM role's STS credentials fetched from
metadata with the hardened-mode token and a timeout (the SDK's own ``EcsRamRoleCredential``
does neither, so it fails on token-only instances), rebuilt before they expire. The SDK's
retries are off (:mod:`agent.confirmation` backs off on the agent's clock) and its loggers are
silenced: they write signed URLs, security token included.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Optional
from urllib.parse import quote

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.alibaba import watchers as alibaba
from agent.clouds.alibaba.config import AlibabaConfig
from agent.confirmation import Look, Observation, Transient, Unusable
from agent.notice import Notice, parse_rfc3339

LOG = logging.getLogger(__name__)

RAM_ROLES = "/latest/meta-data/ram/security-credentials/"
REFRESH_BEFORE = timedelta(minutes=5)
"""Fetch the role's credentials again this long before they expire."""
RETRY_CODES = frozenset(
    {"ServiceUnavailable", "InternalError", "UnknownError", "SDK.HttpError", "SDK.TimeoutError"}
)
SDK_LOGGERS = ("aliyunsdkcore", "aliyunsdkcore.http.http_response")


@dataclass(frozen=True)
class StsCredentials:
    access_key_id: str
    access_key_secret: str
    security_token: str
    expiration: datetime

    def __repr__(self) -> str:  # never print the secret or the token
        return f"StsCredentials({self.access_key_id[:8]}..., expires {self.expiration})"


class RamRole:
    """The instance RAM role's STS credentials, read from metadata with the session token."""

    def __init__(self, instance: alibaba.Instance, role: str, clock: Clock) -> None:
        self._instance = instance
        self._role = role
        self._clock = clock
        self._current: Optional[StsCredentials] = None

    def invalidate(self) -> None:
        self._current = None

    def fresh(self) -> bool:
        current = self._current
        return current is not None and self._clock.now() < current.expiration - REFRESH_BEFORE

    def credentials(self) -> StsCredentials:
        current = self._current
        if current is not None and self.fresh():
            return current
        client = self._instance.client
        try:
            if not self._role:
                listing = client.get(RAM_ROLES)
                roles = (listing or "").split()
                if not roles:
                    raise Unusable(
                        "no access keys configured and no RAM role attached to the instance "
                        "(attach one with ecs:DescribeInstances, or set [alibaba] access_key_id)"
                    )
                self._role = roles[0]
                LOG.info("using the instance RAM role %s", self._role)
            body = client.get(RAM_ROLES + self._role)
        except MetadataError as exc:
            raise Transient(f"cannot read RAM role credentials: {exc}") from None
        if body is None:
            raise Unusable(f"the RAM role {self._role!r} is not attached to this instance")
        try:
            data = json.loads(body)
            if data.get("Code", "Success") != "Success":
                raise Transient(f"RAM role credentials not ready: {data.get('Code')}")
            self._current = StsCredentials(
                str(data["AccessKeyId"]),
                str(data["AccessKeySecret"]),
                str(data["SecurityToken"]),
                parse_rfc3339(str(data["Expiration"])),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Transient("RAM role credentials are not the expected JSON") from None
        LOG.debug("RAM role credentials valid until %s", self._current.expiration)
        return self._current


class Ecs:
    """An ECS client (rebuilt with new role credentials) and one look at an instance."""

    def __init__(
        self, config: AlibabaConfig, clock: Clock, instance: Optional[alibaba.Instance] = None
    ) -> None:
        self._config = config
        self._clock = clock
        self._instance = instance or alibaba.Instance(config, clock)
        self._role = RamRole(self._instance, config.ram_role, clock)
        self._client: Any = None
        self._sdk: Any = None
        self._secrets: list[str] = []
        self._seen = False
        self._warned_absent = False

    def _region(self) -> str:
        try:
            region = self._instance.read_region_id()
        except MetadataError as exc:
            raise Transient(f"cannot read region-id: {exc}") from None
        if not region:
            raise Unusable(f"no region-id at {self._config.metadata_url}")
        return region

    def _import(self) -> Any:
        if self._sdk is None:
            try:
                from aliyunsdkcore import client as sdk_client
                from aliyunsdkcore.acs_exception import exceptions
                from aliyunsdkcore.auth import credentials
                from aliyunsdkecs.request.v20140526 import DescribeInstancesRequest
            except ImportError as exc:
                # The SDK is bundled with the packages; what it imports may not be.
                raise Unusable(
                    f"the aliyun SDK cannot be imported ({exc}): install python3-cryptography "
                    "and python3-jmespath, or preempt-agent[alibaba] with pip"
                ) from None
            for name in SDK_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
            self._sdk = (sdk_client, exceptions, credentials, DescribeInstancesRequest)
        return self._sdk

    def client(self) -> Any:
        sdk_client, _, credentials, _ = self._import()
        config = self._config
        keys = bool(config.access_key_id or config.access_key_secret)
        if self._client is not None and (keys or self._role.fresh()):
            return self._client
        region = self._region()
        timeouts = {"connect_timeout": config.api_timeout, "timeout": config.api_timeout}
        if keys:
            if not (config.access_key_id and config.access_key_secret):
                raise Unusable("set both [alibaba] access_key_id and access_key_secret, or neither")
            self._secrets = [config.access_key_secret]
            self._client = sdk_client.AcsClient(
                config.access_key_id,
                config.access_key_secret,
                region,
                auto_retry=False,
                **timeouts,
            )
        else:
            if all(os.environ.get(f"ALIYUN_ACCESS_KEY_{k}") for k in ("ID", "SECRET")):
                LOG.warning(
                    "ALIYUN_ACCESS_KEY_ID/SECRET are set in the environment: the SDK signs with "
                    "them instead of the instance RAM role"
                )
            sts = self._role.credentials()
            self._secrets = [sts.access_key_secret, sts.security_token]
            self._client = sdk_client.AcsClient(
                region_id=region,
                credential=credentials.StsTokenCredential(
                    sts.access_key_id, sts.access_key_secret, sts.security_token
                ),
                auto_retry=False,
                **timeouts,
            )
        return self._client

    def _describe(self, instance_id: str) -> dict[str, Any]:
        _, _, _, requests = self._import()
        client = self.client()
        request = requests.DescribeInstancesRequest()
        request.set_InstanceIds(json.dumps([instance_id]))
        return self.send(client, "DescribeInstances", request, self._config.ecs_endpoint)

    def send(self, client: Any, action: str, request: Any, endpoint: str) -> dict[str, Any]:
        """Send a request of any product with ``client`` (HTTPS unless ``endpoint`` names
        one): its JSON object, or the error as :meth:`_classify` sees it."""
        _, exceptions, _, _ = self._import()
        request.set_accept_format("json")
        if endpoint:
            request.set_endpoint(endpoint)
        else:
            request.set_protocol_type("https")  # the query string carries the security token
        try:
            body = client.do_action_with_exception(request)
        except exceptions.ServerException as exc:
            raise self._classify(
                exc.get_error_code(),
                exc.get_error_msg(),
                exc.get_http_status(),
                exc.get_request_id(),
                action,
            ) from None
        except exceptions.ClientException as exc:
            raise self._classify(
                exc.get_error_code(), exc.get_error_msg(), 0, None, action
            ) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise Transient(f"{action} answered something that is not JSON") from None
        if not isinstance(data, dict):
            raise Transient(f"{action} answered JSON that is not an object")
        return data

    def _classify(
        self,
        code: Any,
        message: Any,
        status: Any,
        request_id: Any,
        action: str = "DescribeInstances",
    ) -> Exception:
        code = str(code or "error")
        status = int(status or 0)
        text = f"{action}: {code}"
        if status:
            text += f" (HTTP {status}"
            text += f", request {request_id})" if request_id else ")"
        if "signature" not in code.lower():  # those messages quote the signed string
            text += f": {self._scrub(str(message or ''))}"
        if code.startswith("InvalidSecurityToken"):
            self._role.invalidate()
            self._client = None
            return Transient(text)
        if code.startswith("Throttling") or code in RETRY_CODES or status >= 500:
            return Transient(text)
        return Unusable(text)

    def _scrub(self, message: str) -> str:
        """No secret, token or signed query string may reach a log line."""
        message = re.sub(r"\?\S*", "?...", message)
        for secret in self._secrets:
            if secret:
                message = message.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return message[:200]

    def look(self, notice: Notice) -> Observation:
        instance_id = notice.instance_id
        data = self._describe(instance_id)
        instances = data.get("Instances", {}).get("Instance", [])
        found = [i for i in instances if isinstance(i, dict) and i.get("InstanceId") == instance_id]
        if not found:
            return self._absent(notice)
        self._seen = True
        item = found[0]
        status = str(item.get("Status", "?"))
        locks = item.get("OperationLocks", {}).get("LockReason", [])
        reasons = [str(lock.get("LockReason", "")) for lock in locks if isinstance(lock, dict)]
        spot = item.get("SpotStrategy", "?")
        seen = f"instance {status}, locks {reasons or 'none'}, {spot}"
        if any(reason.lower() == "recycling" for reason in reasons):
            return Observation(Look.INTERRUPTED, seen)
        if status in ("Stopping", "Stopped"):
            return Observation(Look.INTERRUPTED, seen)
        if status == "Running" and not reasons:
            return Observation(Look.FINE, seen)
        return Observation(Look.PENDING, seen)

    def _absent(self, notice: Notice) -> Observation:
        """Released, most likely; but a RAM policy without access also gives an empty list.

        So absence counts only once the instance was seen in this confirmation or its
        release time has come; before that it is a reason to look again, said once.
        """
        deadline = notice.deadline
        if self._seen or (deadline is not None and self._clock.now() >= deadline):
            return Observation(Look.INTERRUPTED, "instance absent from DescribeInstances: released")
        if not self._warned_absent:
            self._warned_absent = True
            LOG.warning(
                "%s is absent from DescribeInstances before its release time; if it is running, "
                "the RAM policy may hide it (grant ecs:DescribeInstances)",
                notice.instance_id,
            )
        return Observation(Look.PENDING, "instance absent from DescribeInstances")
