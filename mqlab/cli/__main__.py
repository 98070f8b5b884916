"""``python -m mqlab.cli``: the same as the ``mqlab`` command."""

from mqlab.cli.app import main

main()
