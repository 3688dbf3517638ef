"""Which actions a configuration turns on, and how their tables read from TOML."""

from __future__ import annotations

import pytest

from agent import actions, clouds
from agent.actions import name_list
from agent.clouds.alibaba.actions.settings import SlbConfig
from agent.clouds.alibaba.actions.slb import SlbAction
from agent.clouds.alibaba.config import AlibabaConfig
from agent.clouds.aws.actions.elb import ElbAction
from agent.clouds.aws.actions.lifecycle import LifecycleAction
from agent.clouds.aws.actions.settings import AsgConfig, ElbConfig
from agent.clouds.aws.config import AwsConfig
from agent.config import ConfigError, parse
from agent.notice import ASG_TERMINATION, REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION

ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef"


def test_nothing_is_on_by_default() -> None:
    config = parse("")
    assert actions.build(config, clouds.get("aws")) == []
    assert actions.build(config, clouds.get("alibaba")) == []
    assert actions.build(config, clouds.get("gcp")) == []


def test_the_two_lines_of_a_web_vm() -> None:
    config = parse(
        f'[aws.elb]\ntarget_groups = ["{ARN}"]\n\n'
        '[aws.asg]\nlifecycle_hook = "drain-before-terminate"\n'
    )
    built = actions.build(config, clouds.get("aws"))
    assert [type(a) for a in built] == [ElbAction, LifecycleAction]
    elb, asg = built
    assert (elb.name, elb.stage, asg.name, asg.stage) == (
        "aws-elb",
        "before",
        "aws-asg-lifecycle",
        "after",
    )
    assert elb.kinds == asg.kinds == frozenset({SPOT_INTERRUPTION, ASG_TERMINATION})
    assert REBALANCE_RECOMMENDATION not in elb.kinds
    assert ARN in elb.describe() and "drain-before-terminate" in asg.describe()
    # the watcher keys of [aws.asg] still work beside the new ones
    watcher = config.section("aws").asg
    assert watcher.enabled is True and watcher.interval == 5.0


def test_asg_watcher_keys_and_lifecycle_keys_together() -> None:
    config = parse(
        '[aws.asg]\nenabled = false\ninterval = 3\nlifecycle_hook = "x"\nheartbeat_interval = 30\n'
    )
    asg = config.section("aws").asg
    assert (asg.enabled, asg.interval, asg.lifecycle_hook, asg.heartbeat_interval) == (
        False,
        3.0,
        "x",
        30.0,
    )


def test_auto_and_alibaba() -> None:
    config = parse(
        '[aws.elb]\ntarget_groups = "auto"\n\n'
        '[alibaba.slb]\nload_balancers = ["lb-1", "lb-2"]\ndrain_time = 5\n'
    )
    [elb] = actions.build(config, clouds.get("aws"))
    assert elb.auto and "every target group" in elb.describe()
    [slb] = actions.build(config, clouds.get("alibaba"))
    assert isinstance(slb, SlbAction) and slb.stage == "before"


@pytest.mark.parametrize(
    "text",
    [
        "[aws.elb]\ntarget_groups = [1]\n",
        '[aws.elb]\ntarget_groups = [""]\n',
        '[aws.elb]\ntimeout = -1\ntarget_groups = ["x"]\n',
        '[aws.asg]\nheartbeat_interval = 0\nlifecycle_hook = "x"\n',
        '[alibaba.slb]\nload_balancers = ["lb-1"]\nwait = 3\n',
    ],
)
def test_bad_values_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    table = text.split("]", maxsplit=1)[0].lstrip("[")
    assert table in str(err.value)


def test_name_list() -> None:
    errors: list[str] = []
    assert name_list("k", ["a", " b "], errors) == ("a", "b")
    assert name_list("k", "auto", errors) == ("auto",)
    assert errors == []
    assert name_list("k", [], errors) == ()
    assert name_list("k", {"a": 1}, errors) is None and errors == [
        "k: expected a list of names, got {'a': 1}"
    ]


def test_dataclass_defaults() -> None:
    assert ElbConfig().target_groups == () and ElbConfig().timeout == 0.0
    assert AsgConfig().lifecycle_hook == "" and AsgConfig().heartbeat_interval == 60.0
    assert SlbConfig().load_balancers == () and SlbConfig().drain_time == 30.0
    assert isinstance(AwsConfig().asg, AsgConfig) and isinstance(AlibabaConfig().slb, SlbConfig)
