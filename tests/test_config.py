"""The config file: defaults, type and range checks, and errors that name the offending key."""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path

import pytest

from agent import clouds, config
from agent.clouds.alibaba.config import AlibabaConfig
from agent.clouds.aws.config import AwsConfig
from agent.config import Config, ConfigError, WatcherConfig


def leaf_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, type]]:
    """Every settable key as a dotted name, with its declared type, found from the schema
    (the clouds' sections included)."""
    keys: list[tuple[str, type]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal") or f.metadata.get("convert"):
            continue
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            keys.extend(leaf_keys(kind, f"{prefix}{f.name}."))
        else:
            keys.append((prefix + f.name, kind))
    if cls is Config:
        for name, section in config.section_classes().items():
            keys.extend(leaf_keys(section, f"{name}."))
    return keys


def toml_for(dotted: str, value: str) -> str:
    """``aws.spot.interval`` and ``"x"`` into a TOML document setting that one key."""
    *tables, key = dotted.split(".")
    header = f"[{'.'.join(tables)}]\n" if tables else ""
    return f"{header}{key} = {value}\n"


# A value of the wrong type for each declared type, and what the message says is expected.
WRONG = {
    bool: ('"yes"', "expected true or false"),
    int: ("1.5", "expected an integer"),
    float: ('"fast"', "expected a number"),
    str: ("42", "expected a string"),
    Path: ("true", "expected a string"),
}


# -- defaults -----------------------------------------------------------------------------------


def test_empty_file_gives_the_documented_defaults() -> None:
    cfg = config.parse("")
    assert cfg == Config()
    assert cfg.provider == "auto"
    assert cfg.hooks_dir == Path("/etc/preempt-agent/hooks.d")
    assert cfg.state_dir == Path("/var/lib/preempt-agent")
    assert (cfg.safety_margin, cfg.hook_timeout, cfg.kill_grace) == (10.0, 0.0, 5.0)
    assert cfg.max_run_time == 600.0
    assert cfg.plugins is True
    assert cfg.probe_metadata is True
    assert cfg.log_level == "info"
    assert cfg.aws.metadata_url == "http://169.254.169.254"
    assert cfg.aws.token_ttl == 21600
    assert cfg.aws.spot == WatcherConfig(True, 0.5)
    assert cfg.aws.rebalance == WatcherConfig(True, 5.0)
    assert cfg.aws.maintenance == WatcherConfig(True, 60.0)
    assert (cfg.aws.asg.enabled, cfg.aws.asg.interval) == (True, 5.0)  # + lifecycle keys
    assert cfg.alibaba.metadata_url == "http://100.100.100.200"
    assert cfg.alibaba.spot == WatcherConfig(True, 2.0)


def test_a_nested_value_overrides_only_itself() -> None:
    cfg = config.parse("[aws.spot]\ninterval = 3\n")
    assert cfg.aws.spot == WatcherConfig(True, 3.0)
    assert isinstance(cfg.aws.spot.interval, float)
    assert cfg.aws.rebalance == AwsConfig().rebalance
    assert cfg.alibaba == AlibabaConfig()


def test_values_of_every_type_are_converted() -> None:
    text = """
provider = "aws"
hooks_dir = "/opt/hooks"
safety_margin = 0
plugins = false
log_level = "debug"
[aws]
token_ttl = 60
metadata_url = "http://127.0.0.1:8080"
[aws.asg]
enabled = false
"""
    cfg = config.parse(text)
    assert cfg.provider == "aws"
    assert cfg.hooks_dir == Path("/opt/hooks")
    assert cfg.safety_margin == 0.0
    assert cfg.plugins is False
    assert cfg.log_level == "debug"
    assert cfg.aws.token_ttl == 60
    assert cfg.aws.metadata_url == "http://127.0.0.1:8080"
    assert cfg.aws.asg.enabled is False


def test_the_schema_has_the_keys_the_docs_promise() -> None:
    names = {name for name, _ in leaf_keys()}
    assert {
        "provider",
        "hooks_dir",
        "state_dir",
        "safety_margin",
        "hook_timeout",
        "kill_grace",
        "max_run_time",
        "plugins",
        "log_level",
        "aws.token_ttl",
        "aws.spot.interval",
        "aws.spot.enabled",
        "aws.maintenance.interval",
        "aws.asg.enabled",
        "alibaba.token_ttl",
        "alibaba.spot.interval",
    } <= names


# -- types --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "kind"), leaf_keys(), ids=[k for k, _ in leaf_keys()])
def test_every_key_is_type_checked_and_named(key: str, kind: type) -> None:
    value, expected = WRONG[kind]
    with pytest.raises(ConfigError) as info:
        config.parse(toml_for(key, value))
    message = str(info.value)
    assert f"{key}: {expected}" in message
    assert message.count(": expected") == 1


def test_booleans_are_not_numbers_and_numbers_are_not_booleans() -> None:
    with pytest.raises(ConfigError, match=r"aws\.token_ttl: expected an integer, got True"):
        config.parse("[aws]\ntoken_ttl = true\n")
    with pytest.raises(ConfigError, match=r"kill_grace: expected a number, got False"):
        config.parse("kill_grace = false\n")
    with pytest.raises(ConfigError, match=r"plugins: expected true or false, got 1"):
        config.parse("plugins = 1\n")


def test_an_empty_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"state_dir: expected a string, got ''"):
        config.parse('state_dir = ""\n')


@pytest.mark.parametrize("table", ["aws", "alibaba", "aws.spot", "aws.asg", "alibaba.spot"])
def test_a_table_given_as_a_value_is_refused(table: str) -> None:
    with pytest.raises(ConfigError, match=rf"{table}: expected a table"):
        config.parse(toml_for(table, "5"))


def test_every_problem_is_reported_at_once() -> None:
    text = 'provider = "vax"\nkill_grace = -1\n[aws.spot]\ninterval = "x"\n'
    with pytest.raises(ConfigError) as info:
        config.parse(text)
    message = str(info.value)
    assert f"provider: must be one of auto, {', '.join(clouds.names())} (got 'vax')" in message
    assert "kill_grace: must not be negative (got -1)" in message
    assert "aws.spot.interval: expected a number, got 'x'" in message


# -- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("hook_dir = '/x'\n", "hook_dir"),
        ("[aws]\ntoken_tll = 60\n", "aws.token_tll"),
        ("[aws.spot]\nintreval = 2\n", "aws.spot.intreval"),
        ("[alibaba.spot]\nenable = false\n", "alibaba.spot.enable"),
        ("[vax]\nx = 1\n", "vax"),
        ("source = '/etc/other.toml'\n", "source"),
    ],
)
def test_unknown_keys_are_refused_by_name(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"(^|[ ;]){key}: unknown setting \(known: "):
        config.parse(text)


def test_unknown_key_message_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse("[aws.spot]\nintreval = 2\n")
    assert str(info.value).endswith("aws.spot.intreval: unknown setting (known: enabled, interval)")


# -- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["aws", "alibaba"])
@pytest.mark.parametrize("ttl", [0, -1, 21601])
def test_token_ttl_out_of_range(section: str, ttl: int) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.token_ttl: must be between 1 and 21600"):
        config.parse(f"[{section}]\ntoken_ttl = {ttl}\n")


@pytest.mark.parametrize("ttl", [1, 21600])
def test_token_ttl_bounds_accepted(ttl: int) -> None:
    assert config.parse(f"[aws]\ntoken_ttl = {ttl}\n").aws.token_ttl == ttl


@pytest.mark.parametrize("key", ["safety_margin", "hook_timeout", "kill_grace"])
def test_negative_margins_refused_zero_allowed(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config: {key}: must not be negative \(got -0.5\)$"):
        config.parse(f"{key} = -0.5\n")
    assert getattr(config.parse(f"{key} = 0\n"), key) == 0.0


@pytest.mark.parametrize(
    "key", ["max_run_time", "aws.timeout", "aws.max_backoff", "aws.spot.interval"]
)
def test_durations_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: must be greater than 0"):
        config.parse(toml_for(key, "0"))


@pytest.mark.parametrize("key", ["max_run_time", "kill_grace", "aws.timeout", "aws.spot.interval"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_durations_must_be_finite(key: str, value: str) -> None:
    # An infinite kill grace would wait forever for a hook that ignores SIGTERM, and an
    # infinite max_run_time cannot even be turned into a deadline.
    with pytest.raises(ConfigError, match=rf"^config: {key}: must be a finite number, got "):
        config.parse(toml_for(key, value))


@pytest.mark.parametrize("provider", ["auto", *clouds.names()])
def test_provider_choices(provider: str) -> None:
    assert config.parse(f'provider = "{provider}"\n').provider == provider


@pytest.mark.parametrize("provider", ["AWS", "oracle", "huawei"])
def test_provider_outside_the_choices(provider: str) -> None:
    with pytest.raises(
        ConfigError, match=f"provider: must be one of auto, {', '.join(clouds.names())}"
    ):
        config.parse(f'provider = "{provider}"\n')


def test_log_level_choices() -> None:
    with pytest.raises(ConfigError, match="log_level: must be one of debug, info, warning, error"):
        config.parse('log_level = "trace"\n')


def test_metadata_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match=r"aws\.metadata_url: must be an http\(s\) URL"):
        config.parse('[aws]\nmetadata_url = "169.254.169.254"\n')


# -- files --------------------------------------------------------------------------------------


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("provider = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML: .*line 1"):
        config.load(path)


def test_load_reads_the_file_and_records_its_source(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('provider = "aws"\n', encoding="utf-8")
    cfg = config.load(path)
    assert cfg.provider == "aws"
    assert cfg.source == path


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[aws]\ntoken_ttl = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: aws\.token_ttl: must be between"):
        config.load(path)


def test_missing_default_file_means_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    with caplog.at_level(logging.INFO, logger="agent.config"):
        cfg = config.load()
    assert cfg == Config()
    assert f"no config file at {tmp_path / 'absent.toml'}; using defaults" in caplog.messages


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('log_level = "warning"\n', encoding="utf-8")
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    assert config.load().log_level == "warning"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=rf"^{path}: no such file$"):
        config.load(path)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read: "):
        config.load(tmp_path)  # a directory
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'provider = "\xe9"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: cannot read: "):
        config.load(path)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().provider = "aws"  # type: ignore[misc]


# -- cloud sections come from the registry ----------------------------------------------------


def test_every_registered_cloud_has_its_section_defaulted() -> None:
    cfg = Config()
    assert set(cfg.sections) == set(clouds.names())
    for name in clouds.names():
        assert cfg.section(name) == clouds.get(name).section()
        assert getattr(cfg, name) is cfg.section(name)


def test_a_section_can_be_given_and_replaced() -> None:
    cfg = Config(sections={"aws": AwsConfig(token_ttl=60)})
    assert cfg.aws.token_ttl == 60
    assert cfg.alibaba == AlibabaConfig()
    other = cfg.with_section("alibaba", AlibabaConfig(timeout=1.0))
    assert (other.aws.token_ttl, other.alibaba.timeout) == (60, 1.0)
    assert cfg.alibaba.timeout == 2.0


def test_no_section_for_a_cloud_that_is_not_registered() -> None:
    with pytest.raises(KeyError):
        Config().section("vax")
    with pytest.raises(AttributeError, match="vax"):
        _ = Config().vax
    with pytest.raises(TypeError, match="vax"):
        Config(sections={"vax": AwsConfig()})


def test_the_provider_choices_follow_the_registry() -> None:
    for name in clouds.names():
        assert config.parse(f'provider = "{name}"\n').provider == name


def test_unknown_top_level_key_lists_the_cloud_sections() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse("hook_dir = '/x'\n")
    for name in clouds.names():
        assert f" {name}," in str(info.value) or f" {name})" in str(info.value)


def test_a_watcher_table_keeps_its_own_defaults_for_the_keys_it_does_not_set() -> None:
    cfg = config.parse("[aws.maintenance]\nenabled = true\n[aws.spot]\nenabled = false\n")
    assert cfg.aws.maintenance.interval == 60.0, "not the generic 1 s"
    assert cfg.aws.spot.enabled is False
    assert cfg.aws.spot.interval == 0.5
