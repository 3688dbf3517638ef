"""Exit codes of ``preempt-agent``; the unit's RestartPreventExitStatus= lists the final ones."""

FINISHED = 0
"""A termination notice was drained (and confirmed, when confirmation is on), or a clean stop."""
FAILURE = 1
"""Unexpected error; systemd restarts the agent (Restart=on-failure)."""
USAGE = 2
"""Bad command line (argparse's own code)."""
CHECK_FAILED = 3
"""``check`` found problems in the config or the hooks."""
NOT_CONFIRMED = 4
"""Hooks ran, but the cloud API did not confirm the interruption within the budget."""
UNSUPPORTED = 5
"""No cloud, or a cloud the agent cannot watch: nothing to do, and no restart loop."""
ALREADY_RUNNING = 6
"""Another agent holds the state directory's lock: this one must not drain too, and
restarting it would only repeat that."""
CONFIG = 78
"""The configuration is invalid (EX_CONFIG); a restart would not help."""
