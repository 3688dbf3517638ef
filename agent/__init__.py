"""preempt-agent: drain spot and preemptible VMs before the cloud takes them back.

Importing the package does no work; everything happens in ``agent.cli``.
"""

__version__ = "0.1.0"
