"""Leave the ELBv2 target groups before the hooks run, and come back on a withdrawal.

The instance is deregistered from each configured target group (or, with ``"auto"``, from
every instance-type group in the region that holds it), then the action waits until the
load balancer has finished draining it: ``DescribeTargetHealth`` shows ``draining`` for
the group's deregistration delay, then ``unused``. The wait ends at that delay (or the
configured ``timeout``) or the end of the run, whichever comes first; the drain goes on
either way. Each target is deregistered on the ports it was registered on, and registered
again on them when the notice is withdrawn.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Optional

from agent.actions import BEFORE, ActionContext, Failed, Retrier
from agent.clouds.aws.actions.services import AwsAction, Denied
from agent.confirmation import Unusable
from agent.hooks.runner import ERROR, OK, SKIPPED
from agent.notice import TERMINAL_KINDS

LOG = logging.getLogger(__name__)

API = "ELBv2 API"
AUTO = "auto"
POLL = 5.0
"""Seconds between looks at a draining target."""
SLACK = POLL
"""Looked for past the deregistration delay, so the last look can see the target gone."""
DEFAULT_DELAY = 300.0
GRANT = (
    "elasticloadbalancing:DeregisterTargets, RegisterTargets, DescribeTargetHealth, "
    "DescribeTargetGroupAttributes (and DescribeTargetGroups for auto)"
)
GONE = frozenset({"unused"})


class ElbAction(AwsAction):
    name = "aws-elb"
    stage = BEFORE
    kinds = TERMINAL_KINDS
    table = "elb"
    service = "elbv2"
    grant = GRANT

    def __init__(self, aws: Any, settings: Any) -> None:
        super().__init__(aws, settings)
        self._left: dict[str, list[dict[str, Any]]] = {}
        """Target group ARN -> the targets ({Id, Port}) this agent deregistered there."""

    @classmethod
    def wanted(cls, settings: Any) -> bool:
        return bool(settings.target_groups)

    @property
    def auto(self) -> bool:
        return tuple(self._settings.target_groups) == (AUTO,)

    def describe(self) -> str:
        groups = (
            "every target group in the region that holds this instance"
            if self.auto
            else ", ".join(self._settings.target_groups)
        )
        return f"{self.name}: deregister from {groups} before the hooks; register again on resume"

    def plan(self, ctx: ActionContext) -> str:
        groups = (
            "every target group that holds it (found with DescribeTargetGroups)"
            if self.auto
            else ", ".join(self._settings.target_groups)
        )
        iid = ctx.notice.instance_id
        if ctx.phase == "resume":
            return f"register {iid} again in {groups}"
        how = (
            f"up to {self._settings.timeout:.0f} s"
            if self._settings.timeout
            else "up to the groups' deregistration delay"
        )
        return f"deregister {iid} from {groups} and wait {how} for it to drain"

    # -- drain ------------------------------------------------------------------------------

    def _groups(self, ctx: ActionContext, retry: Retrier) -> list[str]:
        if not self.auto:
            return list(self._settings.target_groups)
        api = self.api(ctx)
        groups: list[str] = []
        marker: Optional[str] = None
        while True:
            kwargs: dict[str, Any] = {"PageSize": 400}
            if marker:
                kwargs["Marker"] = marker
            page = retry(partial(api.call, "describe_target_groups", **kwargs))
            groups += [
                g["TargetGroupArn"]
                for g in page.get("TargetGroups", [])
                if g.get("TargetType", "instance") == "instance"
            ]
            marker = page.get("NextMarker")
            if not marker:
                return groups

    def _mine(self, ctx: ActionContext, retry: Retrier, arn: str) -> list[dict[str, Any]]:
        """This instance's targets in a group (one per port), with their state."""
        api = self.api(ctx)
        answer = retry(lambda: api.call("describe_target_health", TargetGroupArn=arn))
        iid = ctx.notice.instance_id
        return [
            {
                "Id": d["Target"]["Id"],
                "Port": d["Target"].get("Port"),
                "State": d.get("TargetHealth", {}).get("State", "?"),
            }
            for d in answer.get("TargetHealthDescriptions", [])
            if d.get("Target", {}).get("Id") == iid
        ]

    def _drain(self, ctx: ActionContext) -> tuple[str, str]:
        retry = Retrier(ctx, API)
        api = self.api(ctx)
        errors: list[str] = []
        left: list[str] = []
        draining: dict[str, list[dict[str, Any]]] = {}
        for arn in self._groups(ctx, retry):
            try:
                mine = self._mine(ctx, retry, arn)
                serving = [t for t in mine if t["State"] not in GONE | {"draining"}]
                targets = [_target(t) for t in serving]
                if targets:
                    retry(
                        partial(api.call, "deregister_targets", TargetGroupArn=arn, Targets=targets)
                    )
                    known = self._left.setdefault(arn, [])
                    known += [t for t in targets if t not in known]
                    left.append(arn)
                    LOG.info("deregistered %s from %s", ctx.notice.instance_id, arn)
                still = [_target(t) for t in mine if t["State"] not in GONE]
                if still:
                    draining[arn] = still
            except Denied:
                raise
            except (Failed, Unusable) as exc:  # this group only: a wrong ARN, say
                errors.append(f"{_short(arn)}: {exc}")
        if not left and not draining and not errors:
            where = "any target group in the region" if self.auto else "the target groups"
            return SKIPPED, f"{ctx.notice.instance_id} is not registered in {where}"
        waited = self._wait(ctx, retry, draining) if draining else ""
        detail = f"deregistered from {len(left)} target group(s)"
        if waited:
            detail += f"; {waited}"
        if errors:
            return ERROR, f"{detail}; failed: {'; '.join(errors)}"
        return OK, detail

    def _budget(self, ctx: ActionContext, retry: Retrier, arns: list[str]) -> float:
        """How long to wait: the configured timeout, or the longest deregistration delay."""
        if self._settings.timeout:
            return float(self._settings.timeout)
        api = self.api(ctx)
        longest = 0.0
        for arn in arns:
            try:
                answer = retry(
                    partial(api.call, "describe_target_group_attributes", TargetGroupArn=arn)
                )
                attrs = {a["Key"]: a["Value"] for a in answer.get("Attributes", [])}
                delay = float(attrs.get("deregistration_delay.timeout_seconds", DEFAULT_DELAY))
            except (Failed, ValueError, Denied) as exc:
                LOG.warning("%s: deregistration delay unknown (%s); assuming 300 s", arn, exc)
                delay = DEFAULT_DELAY
            longest = max(longest, delay)
        return longest + SLACK

    def _wait(
        self, ctx: ActionContext, retry: Retrier, draining: dict[str, list[dict[str, Any]]]
    ) -> str:
        clock = ctx.clock
        started = clock.monotonic()
        until = min(started + self._budget(ctx, retry, list(draining)), ctx.end())
        api = self.api(ctx)
        pending = dict(draining)
        while True:
            for arn, targets in list(pending.items()):
                try:
                    answer = retry(
                        partial(
                            api.call, "describe_target_health", TargetGroupArn=arn, Targets=targets
                        ),
                        until=until,
                    )
                except Failed as exc:
                    LOG.warning("%s: %s", API, exc)
                    continue
                states = [
                    d.get("TargetHealth", {}).get("State", "?")
                    for d in answer.get("TargetHealthDescriptions", [])
                ]
                if all(state in GONE for state in states):
                    LOG.info("%s has left %s", ctx.notice.instance_id, arn)
                    del pending[arn]
            took = clock.monotonic() - started
            if not pending:
                return f"drained in {took:.0f} s"
            left = until - clock.monotonic()
            if left <= 0 or ctx.cancel.is_set():
                why = "the run was cancelled" if ctx.cancel.is_set() else "the wait ended"
                names = ", ".join(_short(a) for a in pending)
                LOG.warning(
                    "%s still draining from %s after %.0f s; the drain goes on",
                    ctx.notice.instance_id,
                    names,
                    took,
                )
                return f"still draining from {names} when {why} ({took:.0f} s)"
            clock.wait_for(ctx.cancel, min(POLL, left))

    # -- resume -----------------------------------------------------------------------------

    def _resume(self, ctx: ActionContext) -> tuple[str, str]:
        retry = Retrier(ctx, API)
        api = self.api(ctx)
        iid = ctx.notice.instance_id
        plan = {arn: list(targets) for arn, targets in self._left.items()}
        if not plan:
            if self.auto:
                return SKIPPED, "no target group left by this agent to register again in"
            # Restarted since the drain: the configured groups, on their own ports.
            plan = {arn: [{"Id": iid}] for arn in self._settings.target_groups}
        done, errors = [], []
        for arn, targets in plan.items():
            try:
                retry(partial(api.call, "register_targets", TargetGroupArn=arn, Targets=targets))
                done.append(arn)
                self._left.pop(arn, None)
                LOG.info("registered %s again in %s", iid, arn)
            except Denied:
                raise
            except (Failed, Unusable) as exc:  # this group only
                errors.append(f"{_short(arn)}: {exc}")
        detail = f"registered again in {len(done)} target group(s)"
        if errors:
            return ERROR, f"{detail}; failed: {'; '.join(errors)}"
        return OK, detail


def _target(t: dict[str, Any]) -> dict[str, Any]:
    return {"Id": t["Id"], **({"Port": t["Port"]} if t.get("Port") is not None else {})}


def _short(arn: str) -> str:
    """``targetgroup/web/0123abcd`` out of a target group ARN."""
    return arn.split(":", 5)[-1] if arn.count(":") >= 5 else arn
