"""Complete the Auto Scaling lifecycle action once the hooks are over.

An Auto Scaling group with a termination lifecycle hook waits for the hook's heartbeat
timeout (an hour by default) before it terminates an instance, unless someone says the
instance is ready. While the drain lasts, this action keeps the lifecycle action alive
with ``RecordLifecycleActionHeartbeat`` every ``heartbeat_interval`` seconds; after the
user's hooks it sends ``CompleteLifecycleAction`` (``CONTINUE``, by instance id: no
lifecycle token is needed) and the group proceeds at once. It acts on ``asg-termination``
and on a Spot interruption of an instance that belongs to a group; an instance in no group
is skipped. A lifecycle action cannot be taken back, so there is nothing to resume.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from agent.actions import AFTER, FAILURE_LOG_EVERY, ActionContext, Retrier
from agent.clouds.aws.actions.services import AwsAction
from agent.confirmation import Transient, Unusable
from agent.hooks.runner import OK, SKIPPED
from agent.notice import TERMINAL_KINDS
from agent.ratelimit import RateLimitedLog

LOG = logging.getLogger(__name__)

API = "Auto Scaling API"
GRANT = (
    "autoscaling:DescribeAutoScalingInstances, RecordLifecycleActionHeartbeat and "
    "CompleteLifecycleAction"
)
JOIN_TIMEOUT = 5.0


class LifecycleAction(AwsAction):
    name = "aws-asg-lifecycle"
    stage = AFTER
    kinds = TERMINAL_KINDS
    table = "asg"
    service = "autoscaling"
    grant = GRANT

    def __init__(self, aws: Any, settings: Any) -> None:
        super().__init__(aws, settings)
        self._group: dict[str, Optional[str]] = {}
        """Instance id -> its group (None: in no group), looked up once."""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.heartbeats = 0

    @property
    def hook(self) -> str:
        return str(self._settings.lifecycle_hook)

    def describe(self) -> str:
        return (
            f"{self.name}: complete the lifecycle hook {self.hook} after the hooks "
            f"(heartbeat every {self._settings.heartbeat_interval:.0f} s while draining)"
        )

    def plan(self, ctx: ActionContext) -> str:
        return (
            f"find the Auto Scaling group of {ctx.notice.instance_id}, send a heartbeat for "
            f"{self.hook} every {self._settings.heartbeat_interval:.0f} s while the drain "
            f"lasts, and complete {self.hook} with CONTINUE"
        )

    @classmethod
    def wanted(cls, settings: Any) -> bool:
        return bool(getattr(settings, "lifecycle_hook", ""))

    def _find(self, ctx: ActionContext, call: Any) -> Optional[str]:
        """The instance's group (DescribeAutoScalingInstances), looked up once."""
        iid = ctx.notice.instance_id
        if iid not in self._group:
            api = self.api(ctx)
            answer = call(lambda: api.call("describe_auto_scaling_instances", InstanceIds=[iid]))
            found = [
                i
                for i in answer.get("AutoScalingInstances", [])
                if i.get("InstanceId") == iid and i.get("AutoScalingGroupName")
            ]
            group = str(found[0]["AutoScalingGroupName"]) if found else None
            if group:
                LOG.info(
                    "%s is in the Auto Scaling group %s (%s)",
                    iid,
                    group,
                    found[0].get("LifecycleState", "?"),
                )
            self._group[iid] = group
        return self._group[iid]

    # -- heartbeats while the drain lasts ---------------------------------------------------

    def begin(self, ctx: ActionContext) -> None:
        if ctx.dry_run or not self.handles(ctx.notice) or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, args=(ctx,), name="asg-heartbeat", daemon=True
        )
        self._thread.start()

    def end(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_TIMEOUT + float(self._cloud.api_timeout))

    def _beat(self, ctx: ActionContext) -> None:
        failures = RateLimitedLog(LOG, FAILURE_LOG_EVERY, ctx.clock.monotonic)
        interval = float(self._settings.heartbeat_interval)
        iid = ctx.notice.instance_id
        while not ctx.clock.wait_for(self._stop, interval):
            if ctx.cancel.is_set():
                return
            try:
                group = self._find(ctx, lambda call: call())
                if group is None:
                    return
                self.api(ctx).call(
                    "record_lifecycle_action_heartbeat",
                    LifecycleHookName=self.hook,
                    AutoScalingGroupName=group,
                    InstanceId=iid,
                )
            except Transient as exc:
                failures.failure("%s: heartbeat: %s; trying again later", API, exc)
                continue
            except Unusable as exc:
                LOG.error("%s: heartbeat for %s: %s; no more heartbeats", API, self.hook, exc)
                return
            except Exception:  # a thread must not die silently
                LOG.exception("%s: heartbeat for %s failed", API, self.hook)
                return
            self.heartbeats += 1
            failures.recovered("%s answers again", API)
            LOG.info("lifecycle heartbeat sent for %s in %s", iid, group)

    # -- the end of the drain ---------------------------------------------------------------

    def _drain(self, ctx: ActionContext) -> tuple[str, str]:
        retry = Retrier(ctx, API)
        iid = ctx.notice.instance_id
        group = self._find(ctx, retry)
        if group is None:
            return SKIPPED, f"{iid} is in no Auto Scaling group"
        self.end()  # no heartbeat may race the completion (it would be refused)
        api = self.api(ctx)
        retry(
            lambda: api.call(
                "complete_lifecycle_action",
                LifecycleHookName=self.hook,
                AutoScalingGroupName=group,
                LifecycleActionResult="CONTINUE",
                InstanceId=iid,
            )
        )
        beats = f"; {self.heartbeats} heartbeat(s) sent" if self.heartbeats else ""
        return OK, f"completed {self.hook} in {group} with CONTINUE{beats}"
