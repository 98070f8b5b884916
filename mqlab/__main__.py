"""``python -m mqlab``: the same as the ``mqlab`` command."""

from mqlab.cli.app import main

main()
