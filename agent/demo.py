"""``preempt-agent demo``: the whole cycle on this machine, with no cloud.

Starts the mock metadata service on loopback, writes a throw-away config and example hooks,
runs the real ``preempt-agent run`` as a child process against it, makes a spot notice
appear a few seconds later, and prints the timeline. The notice window is shortened to
30 seconds so the demo ends quickly; nothing leaves the loopback interface.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from agent import exitcodes
from agent import mock_metadata as mock
from agent.interpreter import python_command, python_env

WINDOW = 30.0

HOOKS = {
    "10-announce": """\
        #!/bin/sh
        # preempt-agent: kinds=spot-interruption
        echo "draining $PREEMPT_INSTANCE_ID ($PREEMPT_PROVIDER): $PREEMPT_ACTION, $PREEMPT_DEADLINE"
        echo "$PREEMPT_SECONDS_LEFT s left, dry run: $PREEMPT_DRY_RUN"
        """,
    "20-checkpoint": """\
        #!/bin/sh
        # Reads the notice (JSON) from stdin, as a real hook would to save work.
        echo "saving a checkpoint for event $(sed -n 's/.*"event_id": "\\([^"]*\\)".*/\\1/p')"
        echo "checkpoint written"
        """,
    "30-stuck": """\
        #!/bin/sh
        # preempt-agent: timeout=2
        echo "this hook hangs; the agent kills it after its 2 s timeout"
        exec sleep 600
        """,
    "40-last-words": """\
        #!/bin/sh
        echo "the next hook still runs after one hung: deregistered from the load balancer"
        """,
}


def _aws(server: mock.MockMetadataServer, deadline: datetime, at: float) -> str:
    mock.aws_defaults(server)
    path = "/latest/meta-data/spot/instance-action"
    server.set_at(path, mock.aws_spot_action("terminate", deadline), at)
    return path


def _alibaba(server: mock.MockMetadataServer, deadline: datetime, at: float) -> str:
    mock.alibaba_defaults(server)
    path = "/latest/meta-data/instance/spot/termination-time"
    server.set_at(path, mock.rfc3339(deadline), at)
    return path


SCENARIOS: dict[
    str, tuple[mock.Flavor, Callable[[mock.MockMetadataServer, datetime, float], str]]
] = {
    "aws": (mock.AWS, _aws),
    "alibaba": (mock.ALIBABA, _alibaba),
}


def _write_setup(folder: Path, provider: str, url: str) -> Path:
    hooks = folder / "hooks.d"
    hooks.mkdir(mode=0o755)
    hooks.chmod(0o755)
    for name, text in HOOKS.items():
        path = hooks / name
        path.write_text(textwrap.dedent(text))
        path.chmod(0o755)
    config = folder / "agent.toml"
    config.write_text(
        textwrap.dedent(f"""\
            provider = "{provider}"
            hooks_dir = "{hooks}"
            state_dir = "{folder / "state"}"
            safety_margin = 5
            kill_grace = 1
            plugins = false
            probe_metadata = false
            # No cloud API behind the mock: never ask a real one with whatever keys are around.
            confirm = false

            [{provider}]
            metadata_url = "{url}"

            [{provider}.spot]
            interval = 1
            """)
    )
    return config


def run_demo(provider: str = "aws", lead: float = 4.0) -> int:
    flavor, scenario = SCENARIOS[provider]
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"T+{time.monotonic() - start:5.1f}s  {text}", flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="preempt-agent-demo-") as tmp,
        mock.MockMetadataServer(flavor) as server,
    ):
        deadline = datetime.now(timezone.utc) + timedelta(seconds=lead + WINDOW)
        path = scenario(server, deadline, time.monotonic() + lead)
        config = _write_setup(Path(tmp), provider, server.url)
        say(f"mock {provider} metadata service on {server.url} (tokens required)")
        say(f"a spot notice appears at {path} in {lead:.0f} s, deadline {mock.rfc3339(deadline)}")
        say(f"starting: preempt-agent --config {config} run")
        child = subprocess.Popen(
            python_command("agent", "--config", str(config), "--log-format", "text", "run"),
            env=python_env(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in child.stdout or ():
            # Drop the child's own timestamp: the timeline's offset says when.
            say("agent | " + line.rstrip().split(" ", 1)[-1])
        code = child.wait()
        verdict = "finished" if code == exitcodes.FINISHED else "see the log above"
        say(f"agent exited with code {code} ({verdict})")
        return code
