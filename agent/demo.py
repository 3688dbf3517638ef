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

from agent import exitcodes
from agent.interpreter import python_command, python_env
from agent.mock import flavors, rfc3339

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


def _write_setup(folder: Path, provider: str, watcher: str, url: str) -> Path:
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

            [{provider}.{watcher}]
            interval = 1
            """)
    )
    return config


def run_demo(provider: str, lead: float = 4.0) -> int:
    mock = flavors()[provider]
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"T+{time.monotonic() - start:5.1f}s  {text}", flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="preempt-agent-demo-") as tmp,
        mock.make_server() as server,
    ):
        deadline = datetime.now(timezone.utc) + timedelta(seconds=lead + WINDOW)
        mock.defaults(server)
        path = mock.spot_notice(server, deadline, time.monotonic() + lead)
        config = _write_setup(Path(tmp), provider, mock.watcher, server.url)
        tokens = " (tokens required)" if mock.flavor.token_header else ""
        say(f"mock {provider} metadata service on {server.url}{tokens}")
        say(f"a spot notice appears at {path} in {lead:.0f} s, deadline {rfc3339(deadline)}")
        say(f"starting: preempt-agent --config {config} run --dry-run")
        child = subprocess.Popen(
            python_command(
                "agent", "--config", str(config), "--log-format", "text", "run", "--dry-run"
            ),
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
