"""The [[webhooks]] and [metrics] settings: secrets kept out of the file, errors naming keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import report
from agent.config import ConfigError, parse
from agent.report.settings import WEBHOOK_EVENTS, resolve_webhook


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


def test_defaults_are_off() -> None:
    config = parse("")
    assert config.webhooks == ()
    assert (config.metrics.textfile, config.metrics.listen) == ("", "")


def test_a_full_webhook_table() -> None:
    [hook] = parse(
        """
[[webhooks]]
url = "https://hooks.example.com/x?token=abc"
headers = { X-Team = "ops" }
events = ["notice", "outcome"]
timeout = 3
format = "slack"
"""
    ).webhooks
    assert hook.url == "https://hooks.example.com/x?token=abc"
    assert hook.headers == (("X-Team", "ops"),)
    assert hook.events == WEBHOOK_EVENTS
    assert (hook.timeout, hook.format) == (3.0, "slack")
    assert "abc" not in repr(hook)


def test_secrets_from_the_environment_and_a_root_only_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", "https://example.com/T0/B0/secret")
    key = tmp_path / "token"
    key.write_text("Bearer s3cret\n")
    key.chmod(0o600)
    text = f'[[webhooks]]\nurl = "env:HOOK_URL"\nheaders = {{ Authorization = "file:{key}" }}\n'
    [raw] = parse(text).webhooks
    assert raw.url == "env:HOOK_URL"  # read when the agent starts, not by every command
    hook = resolve_webhook(0, raw)
    assert hook.url == "https://example.com/T0/B0/secret"
    assert hook.headers == (("Authorization", "Bearer s3cret"),)

    key.chmod(0o640)
    with pytest.raises(ConfigError) as caught:
        resolve_webhook(0, raw)
    problem = str(caught.value)
    assert "webhooks[0].headers.Authorization" in problem and "0640" in problem
    assert "s3cret" not in problem


def test_an_unreadable_secret_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    config = parse(f'state_dir = "{tmp_path}"\n[[webhooks]]\nurl = "env:NOPE"\n')
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.url: environment variable 'NOPE'"):
        report.build(config, tmp_path, "aws")
    monkeypatch.setenv("NOPE", "ftp://example.com/")
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.url: must be an http\(s\) URL"):
        report.build(config, tmp_path, "aws")


def test_errors_name_the_key_and_never_the_secret() -> None:
    assert "webhooks[0].url: env: must be followed" in error('[[webhooks]]\nurl = "env:"\n')
    assert "webhooks[0].headers.X: file: must be followed by an absolute path" in error(
        '[[webhooks]]\nurl = "http://a/"\nheaders = { X = "file:key" }\n'
    )
    assert "webhooks[0].url: required" in error('[[webhooks]]\nformat = "json"\n')
    problem = error('[[webhooks]]\nurl = "ftp://user:hunter2@host/"\n')
    assert "webhooks[0].url: must be an http(s) URL" in problem and "hunter2" not in problem
    assert "webhooks[1].events: unknown event 'drain'" in error(
        '[[webhooks]]\nurl = "http://a/"\n[[webhooks]]\nurl = "http://b/"\nevents = ["drain"]\n'
    )
    assert "webhooks[0].colour: unknown setting" in error(
        '[[webhooks]]\nurl = "http://a/"\ncolour = "red"\n'
    )
    assert "webhooks[0].format: must be one of json, slack, template" in error(
        '[[webhooks]]\nurl = "http://a/"\nformat = "xml"\n'
    )
    assert "webhooks: expected an array of tables" in error('webhooks = "http://a/"\n')
    assert "webhooks[0].template" in error('[[webhooks]]\nurl = "http://a/"\nformat = "template"\n')


def test_template_syntax_errors_are_config_errors() -> None:
    pytest.importorskip("jinja2")
    problem = error('[[webhooks]]\nurl = "http://a/"\nformat = "template"\ntemplate = "{{ kind "\n')
    assert "webhooks[0].template: template error" in problem


def test_metrics_settings() -> None:
    config = parse(
        '[metrics]\ntextfile = "/var/lib/node_exporter/preempt.prom"\nlisten = "[::1]:9101"\n'
    )
    assert config.metrics.listen == "[::1]:9101"
    assert "metrics.listen: must be" in error('[metrics]\nlisten = "9101"\n')
    assert "metrics.listen: needs a port" in error('[metrics]\nlisten = "127.0.0.1:0"\n')
    assert "metrics.textfile: must be an absolute path ending in .prom" in error(
        '[metrics]\ntextfile = "metrics.txt"\n'
    )
    assert "metrics.port: unknown setting" in error("[metrics]\nport = 1\n")
