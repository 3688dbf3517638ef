"""Runs one plugin hook in its own process: ``python -m agent.hooks.plugin_host NAME PHASE``.

``--describe`` instead prints what every plugin handles (see :func:`plugins.discover`).

The notice arrives as JSON on stdin and the context in PREEMPT_* variables, exactly as for
a script. A plugin's return value, if an int, is the exit code (True is 0, False is 1); an
exception is exit 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from agent.hooks import PHASES
from agent.hooks.plugins import describe_all, load, phase_function


def main(argv: list[str]) -> int:
    if argv == ["--describe"]:
        print(describe_all())
        return 0
    if len(argv) != 2 or argv[1] not in PHASES:
        print("usage: python -m agent.hooks.plugin_host NAME drain|resume", file=sys.stderr)
        return 2
    name, phase = argv
    notice = json.load(sys.stdin)
    context = {k: v for k, v in os.environ.items() if k.startswith("PREEMPT_")}
    try:
        function = phase_function(load(name), phase)
        if function is None:
            print(f"plugin {name} has no {phase}()", file=sys.stderr)
            return 1
        result = function(notice, context)
    except Exception:
        traceback.print_exc()
        return 1
    if isinstance(result, bool):  # an int too, but True means it worked
        return 0 if result else 1
    if isinstance(result, int):
        # An exit status is one byte: 256 would read as success. Out of range is a failure.
        return result if 0 <= result <= 255 else 1
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main(sys.argv[1:]))
