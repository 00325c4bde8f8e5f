"""``python -m smoothkern``: the same as the ``smoothkern`` command."""

from .cli import main

raise SystemExit(main())
