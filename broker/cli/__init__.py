"""The ``lienthong`` command: one module per command group, calling the rooms below."""

from broker.cli.main import main

__all__ = ["main"]
