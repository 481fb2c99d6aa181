"""The ``lienthong`` command: one module per command group, each calling the rooms below.

``app`` holds the group itself (errors as one line and an exit code); importing the modules below
registers their commands on it.
"""

from broker.cli import adapters, audit, directory, documents, ops, pki, relay, up  # noqa: F401 - they register commands
from broker.cli.app import main

__all__ = ["main"]
