"""The drop-in's error class for wrong arguments.

Captum reports many wrong arguments (targets, stdevs, nt_type) with ``assert``, smoothkern with a
``ValueError``. :class:`CaptumArgumentError` is both, so code that catches either keeps working.
"""

from __future__ import annotations


class CaptumArgumentError(ValueError, AssertionError):
    """A wrong argument to a drop-in class: a ``ValueError`` and an ``AssertionError``."""
