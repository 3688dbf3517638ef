"""A local Alibaba Cloud ECS API for the real aliyun SDK: it checks every request's signature.

RPC signature v1 as documented: every parameter but ``Signature`` sorted by name, each
name and value percent-encoded (RFC 3986: only ``A-Za-z0-9-_.~`` left as they are), joined
as ``k=v&...``; the string to sign is ``METHOD&%2F&`` plus that string percent-encoded
again; the signature is base64(HMAC-SHA1(key = secret + "&", string to sign)). A request
whose signature, key, token, nonce or timestamp does not check out gets the API's own error
and is listed in ``rejected``, so a test can assert that the SDK signed correctly.

DescribeInstances answers with the documented shape (``Instances.Instance[]`` with
``Status``, ``OperationLocks.LockReason[]``, ``SpotStrategy``...). Faults can be queued:
throttling (``Throttling.User``), ``ServiceUnavailable`` (503), a bare 503 from a gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from urllib.parse import parse_qsl, quote, urlsplit

from tests.fakes.background import BackgroundServer

VERSION = "2014-05-26"
MAX_CLOCK_SKEW = timedelta(minutes=15)


def percent_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def string_to_sign(method: str, params: dict[str, str]) -> str:
    canonical = "&".join(
        f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items())
    )
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def sign(method: str, params: dict[str, str], secret: str) -> str:
    digest = hmac.new(
        (secret + "&").encode(), string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


@dataclass
class Key:
    secret: str
    token: Optional[str] = None  # STS credentials carry a security token
    allowed: bool = True  # False: the RAM policy refuses ecs:DescribeInstances


@dataclass
class Fault:
    status: int
    code: Optional[str]  # None: a bare gateway answer that is not JSON
    message: str = ""


@dataclass
class Recorded:
    method: str
    params: dict[str, str]
    time: float
    answer: str  # "ok" or the error code sent


@dataclass
class _State:
    keys: dict[str, Key] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def instance_record(
    instance_id: str,
    region: str,
    status: str,
    locks: tuple[str, ...],
    spot: str,
    behavior: str,
) -> dict[str, Any]:
    """One ``Instances.Instance[]`` item as DescribeInstances documents it (trimmed)."""
    return {
        "InstanceId": instance_id,
        "InstanceName": "worker",
        "RegionId": region,
        "ZoneId": f"{region}-h",
        "Status": status,
        "InstanceType": "ecs.g7.large",
        "InstanceChargeType": "PostPaid",
        "SpotStrategy": spot,
        "SpotPriceLimit": 0.0,
        "SpotInterruptionBehavior": behavior,
        "SpotDuration": 0,
        "CreationTime": "2026-01-05T10:00Z",
        "ExpiredTime": "2099-12-31T15:59Z",
        "OperationLocks": {"LockReason": [{"LockReason": r, "LockMsg": ""} for r in locks]},
    }


class EcsApiServer(BackgroundServer):
    """The fake ECS endpoint on loopback; every public method is safe from any thread."""

    version = VERSION

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._cond = threading.Condition()
        self._state = _State()

    # -- scripting ------------------------------------------------------------------------

    def add_key(
        self, key_id: str, secret: str, token: Optional[str] = None, allowed: bool = True
    ) -> None:
        with self._cond:
            self._state.keys[key_id] = Key(secret, token, allowed)

    def set_instance(
        self,
        instance_id: str,
        status: str = "Running",
        locks: tuple[str, ...] = (),
        region: str = "cn-hangzhou",
        spot: str = "SpotAsPriceGo",
        behavior: str = "Terminate",
    ) -> None:
        record = instance_record(instance_id, region, status, locks, spot, behavior)
        with self._cond:
            self._state.instances[instance_id] = record

    def remove_instance(self, instance_id: str) -> None:
        """Released: the instance drops out of DescribeInstances."""
        with self._cond:
            self._state.instances.pop(instance_id, None)

    def fail(self, count: int, code: Optional[str], status: int = 400, message: str = "") -> None:
        """Answer the next ``count`` well-signed requests with this error."""
        with self._cond:
            self._state.faults.extend([Fault(status, code, message)] * count)

    @property
    def requests(self) -> list[Recorded]:
        with self._cond:
            return list(self._state.requests)

    @property
    def rejected(self) -> list[str]:
        """Why each refused request was refused (bad signature, unknown key, ...)."""
        with self._cond:
            return list(self._state.rejected)

    def wait_for_requests(self, count: int, timeout: float) -> list[Recorded]:
        end = time.monotonic() + timeout
        with self._cond:
            while len(self._state.requests) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} ECS API requests in {timeout} s")
                self._cond.wait(left)
            return list(self._state.requests)

    # -- serving --------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, str, str]:
        """(status, content type, body) for one request."""
        parts = urlsplit(path)
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            pairs = []
        params = dict(pairs)
        status, payload = self._check(method, parts.path, params, body, len(pairs))
        code = payload.get("Code", "ok") if isinstance(payload, dict) else "bare"
        with self._cond:
            self._state.requests.append(Recorded(method, params, time.monotonic(), code))
            self._cond.notify_all()
        if isinstance(payload, str):
            return status, "text/html", payload
        return status, "application/json;charset=utf-8", json.dumps(payload)

    def _reject(self, status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        with self._cond:
            self._state.rejected.append(f"{code}: {message}")
        return status, _error(code, message)

    def _check(
        self, method: str, path: str, params: dict[str, str], body: bytes, pairs: int
    ) -> tuple[int, Any]:
        if method != "POST" or path != "/" or body:
            return self._reject(400, "InvalidParameter", f"RPC: POST / only, got {method} {path}")
        if pairs != len(params):
            return self._reject(400, "InvalidParameter", "a parameter appears twice")
        for name, want in (
            ("Format", "JSON"),
            ("Version", self.version),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
        ):
            if params.get(name) != want:
                return self._reject(400, "MissingParameter", f"{name} must be {want}")
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp", "Action"):
            if not params.get(name):
                return self._reject(400, f"Missing{name}", f"{name} is mandatory")
        try:
            stamp = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return self._reject(400, "InvalidTimeStamp.Format", "Timestamp is not ISO 8601 UTC")
        if abs(stamp.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)) > MAX_CLOCK_SKEW:
            return self._reject(400, "InvalidTimeStamp.Expired", "Timestamp is too far off")
        with self._cond:
            key = self._state.keys.get(params["AccessKeyId"])
            nonce_seen = params["SignatureNonce"] in self._state.nonces
            self._state.nonces.add(params["SignatureNonce"])
        if key is None:
            return self._reject(
                404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        if nonce_seen:
            return self._reject(
                400, "SignatureNonceUsed", "The request signature nonce has been used."
            )
        unsigned = {k: v for k, v in params.items() if k != "Signature"}
        if not hmac.compare_digest(sign(method, unsigned, key.secret), params["Signature"]):
            # The real API quotes its string to sign, which names the key id and the token.
            return self._reject(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to "
                f"sign is:{string_to_sign(method, unsigned)}",
            )
        if key.token is not None and params.get("SecurityToken") != key.token:
            code = (
                "MissingSecurityToken"
                if "SecurityToken" not in params
                else ("InvalidSecurityToken.MismatchWithAccessKey")
            )
            return self._reject(400, code, "The security token is missing or does not match.")
        if not key.allowed:
            return 403, _error(
                "Forbidden.RAM",
                "User not authorized to operate on the specified resource, or this API "
                "doesn't support RAM.",
            )
        with self._cond:
            fault = self._state.faults.pop(0) if self._state.faults else None
        if fault is not None:
            if fault.code is None:
                return fault.status, "<html><body>503 Service Temporarily Unavailable</body></html>"
            return fault.status, _error(fault.code, fault.message or fault.code)
        return self.dispatch(params)

    def dispatch(self, params: dict[str, str]) -> tuple[int, Any]:
        """The answer to one well-signed request (another product's fake overrides this)."""
        if params["Action"] != "DescribeInstances":
            return 404, _error("InvalidAction.NotFound", f"{params['Action']} is not faked here")
        return 200, self._describe(params)

    def _describe(self, params: dict[str, str]) -> dict[str, Any]:
        region = params.get("RegionId", "")
        wanted = json.loads(params.get("InstanceIds") or "[]")
        with self._cond:
            found = [
                dict(i)
                for iid, i in self._state.instances.items()
                if iid in wanted and i["RegionId"] == region
            ]
        return {
            "RequestId": str(uuid.uuid4()).upper(),
            "TotalCount": len(found),
            "PageNumber": 1,
            "PageSize": 10,
            "NextToken": "",
            "Instances": {"Instance": found},
        }


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "RequestId": str(uuid.uuid4()).upper(),
        "HostId": "ecs.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}",
    }


class _Handler(BaseHTTPRequestHandler):
    owner: EcsApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status, content_type, text = self.owner.answer(self.command, self.path, body)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = _serve
    do_GET = _serve


EcsApiServer.handler = _Handler
