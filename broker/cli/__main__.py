"""``python -m broker.cli``: the ``lienthong`` command."""

from broker.cli.main import main

main()
