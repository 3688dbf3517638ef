"""The action tests' shared fixtures."""

from tests.fakes.actions_env import *  # noqa: F403
