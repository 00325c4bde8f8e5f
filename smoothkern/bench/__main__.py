"""``python -m smoothkern.bench``: the memory subprocess (``--child``), else the command."""

from .command import main

main()
