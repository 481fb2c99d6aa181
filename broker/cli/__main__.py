"""``python -m broker.cli``: the ``lienthong`` command."""

from broker.cli import main

main()
