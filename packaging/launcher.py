#!/usr/bin/python3 -I
"""preempt-agent: run the agent installed in /usr/lib/preempt-agent.

The package keeps its Python code and the libraries it vendors out of the
system site-packages; this launcher puts them first on sys.path. ``-I``
(isolated mode) ignores PYTHON* environment variables, the user's
site-packages and the current directory, so a root daemon imports only what
the package and the distribution installed.
"""

import sys

LIBDIR = "/usr/lib/preempt-agent"

# Bytecode is compiled at install time; the daemon never writes into /usr.
sys.dont_write_bytecode = True
sys.path[0:0] = [LIBDIR, LIBDIR + "/vendor"]

from agent.cli import main  # noqa: E402

sys.exit(main())
