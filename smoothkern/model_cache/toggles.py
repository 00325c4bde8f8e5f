"""Process-wide switches a call turns off for a while, safe when calls overlap in threads.

A plain save/set/restore around each call breaks when two calls overlap: the second saves the
first's "off", and whichever leaves last restores that, leaving the switch off for the process.
Here the first user saves the caller's setting and turns it off, later users only count, and
the last to leave restores the saved setting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_LOCK = threading.Lock()
_USERS = 0
_SAVED: bool | None = None


@contextlib.contextmanager
def attention_fast_path_off() -> Iterator[None]:
    """torch's fused attention fast path (``torch.backends.mha``) off inside: in eval mode
    without gradients, nn.MultiheadAttention / TransformerEncoderLayer would otherwise skip the
    submodules (and their hooks) a pass needs. Restored when the last overlapping user leaves."""
    global _USERS, _SAVED
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    with _LOCK:
        if _USERS == 0:
            _SAVED = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
        _USERS += 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS -= 1
            if _USERS == 0:
                mha.set_fastpath_enabled(_SAVED)
                _SAVED = None
