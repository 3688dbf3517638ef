"""The real agent process: its webhooks carry the instance's region, zone and type, read from
the mock IMDSv2's identity document, to a receiver on loopback."""

from __future__ import annotations

from agent import exitcodes
from agent.clouds.aws import watchers as aws
from tests.e2e.test_aws_e2e import FAST, notify
from tests.report.receiver import Receiver
from tests.waiting import wait_until


def test_notice_and_outcome_webhooks_carry_the_identity(aws_imds, hooks, start_agent):
    hooks.add("10-drain")
    with Receiver() as got:
        agent = start_agent(
            "aws", aws_imds.url, FAST + f'\n[[webhooks]]\nurl = "{got.url}/fleet"\n'
        )
        told = agent.wait_for_log("instance identity:")
        assert "us-east-1a" in told["message"]
        notify(aws_imds, 60)
        assert agent.wait() == exitcodes.FINISHED
        wait_until(lambda: got.count() >= 2, 10, "the notice and outcome webhooks")
        receipt, outcome = got.bodies()[:2]

    assert receipt["event"] == "notice" and outcome["event"] == "outcome"
    for doc in (receipt, outcome):
        assert doc["region"] == "us-east-1"
        assert doc["zone"] == "us-east-1a"
        assert doc["instance_type"] == "m5.large"
        assert doc["hostname"] and doc["instance_id"] == "i-0123456789abcdef0"
    assert len([r for r in aws_imds.requests if r.path == aws.IDENTITY]) == 1
    assert len([r for r in aws_imds.requests if r.method == "PUT"]) == 1, "one token for all"
