"""An Auto Scaling endpoint in front of moto that answers the lifecycle calls moto lacks.

moto models groups, their instances and lifecycle hooks, but not
``CompleteLifecycleAction`` or ``RecordLifecycleActionHeartbeat``. This proxy answers those
two itself, checking them the way Auto Scaling does (the group must have the hook and the
instance; ``CONTINUE`` or ``ABANDON``) against moto's own state, records each call with its
parameters, and forwards everything else to moto. Faults are queued per action as in
:class:`tests.fakes.ec2_proxy.FaultProxy`.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl

from moto.autoscaling.models import autoscaling_backends
from moto.core import DEFAULT_ACCOUNT_ID

from tests.fakes.ec2_proxy import ERROR_XML, FaultProxy, _Handler

LOCAL = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")
HOP_HEADERS = ("content-length", "transfer-encoding", "connection", "server", "date")
NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


@dataclass(frozen=True)
class Call:
    action: str
    params: dict[str, str]
    time: float


class AutoScalingProxy(FaultProxy):
    def __init__(self, upstream: str, region: str = "us-east-1") -> None:
        super().__init__(upstream)
        self.region = region
        self._cond = threading.Condition()
        self._calls: list[Call] = []
        self.completed: set[str] = set()  # instance ids whose lifecycle action is over

    def calls(self, action: Optional[str] = None) -> list[Call]:
        with self._cond:
            return [c for c in self._calls if action is None or c.action == action]

    def wait_for(self, action: str, count: int, timeout: float = 10.0) -> list[Call]:
        end = time.monotonic() + timeout
        with self._cond:
            while len([c for c in self._calls if c.action == action]) < count:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} {action} calls in {timeout} s")
                self._cond.wait(left)
        return self.calls(action)

    def local(self, action: str, params: dict[str, str]) -> tuple[int, bytes]:
        """Auto Scaling's answer to a lifecycle call, checked against moto's groups."""
        with self._cond:
            self._calls.append(Call(action, params, time.monotonic()))
            self._cond.notify_all()
        backend = autoscaling_backends[DEFAULT_ACCOUNT_ID][self.region]
        group_name = params.get("AutoScalingGroupName", "")
        hook_name = params.get("LifecycleHookName", "")
        instance = params.get("InstanceId", "")
        group = backend.autoscaling_groups.get(group_name)
        if group is None or not backend.describe_lifecycle_hooks(group_name, [hook_name]):
            return _error("ValidationError", f"No Lifecycle Hook found with name {hook_name}")
        members = {state.instance.id for state in group.instance_states}
        if instance not in members or instance in self.completed:
            return _error(
                "ValidationError",
                f"No active Lifecycle Action found with instance ID {instance}",
            )
        if action == "CompleteLifecycleAction":
            if params.get("LifecycleActionResult") not in ("CONTINUE", "ABANDON"):
                return _error(
                    "ValidationError", "LifecycleActionResult must be CONTINUE or ABANDON"
                )
            self.completed.add(instance)
        body = (
            f'<{action}Response xmlns="{NS}"><{action}Result/>'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            f"</{action}Response>"
        )
        return 200, body.encode()


def _error(code: str, message: str) -> tuple[int, bytes]:
    return 400, ERROR_XML.format(code=code, message=message).encode()


class _LifecycleHandler(_Handler):
    owner: AutoScalingProxy

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        params = dict(parse_qsl(body.decode("utf-8", "replace")))
        action = params.get("Action", "?")
        fault = self.owner._take(action)
        headers: list[tuple[str, str]] = [("Content-Type", "text/xml;charset=UTF-8")]
        if fault is not None:
            status = fault.status
            data = ERROR_XML.format(code=fault.code, message=fault.message).encode()
        elif action in LOCAL:
            status, data = self.owner.local(action, params)
        else:
            status, upstream, data = self.owner._forward("POST", self.path, self.headers, body)
            headers = [(k, v) for k, v in upstream if k.lower() not in HOP_HEADERS]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


AutoScalingProxy.handler = _LifecycleHandler
