"""Keying the drop-in NoiseTunnel's counter noise by given row indices.

``smoothkern.captum.NoiseTunnel.attribute`` has no ``example_index`` argument: its noise is keyed
by each row's position in the call. For the fused sensitivity metric, the rows of a joined call
must draw the noise of their positions in the unfused calls. Within :class:`rows_keyed`, the
drop-in module's ``CounterNoise`` is a subclass that takes the indices from a context variable
(other threads and calls see none and behave as before); the original is put back when no call
uses it. ``used`` tells whether the subclass was built, so a change in the drop-in that bypasses
it is noticed rather than silently giving other noise.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
from dataclasses import dataclass
from typing import Any

from torch import Tensor

_DROP_IN = "smoothkern.captum.noise_tunnel"


@dataclass
class Keying:
    """The row indices of the joined call, and whether the drop-in's noise took them.

    Args:
        index (LongTensor[rows]): each row's index for the counter noise.
    """

    index: Tensor
    used: bool = False


_ACTIVE: contextvars.ContextVar[Keying | None] = contextvars.ContextVar(
    "smoothkern_sensitivity_row_keys", default=None)
_LOCK = threading.Lock()
_USERS = [0]                    # calls inside rows_keyed, over all threads
_ORIGINAL: list[Any] = [None]   # the drop-in module's CounterNoise while replaced


@functools.cache
def _row_keyed_counter_noise() -> type:
    from ..sources import CounterNoise

    class RowKeyedCounterNoise(CounterNoise):
        """CounterNoise keyed by the active joined call's row indices (none active: as is)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            keying = _ACTIVE.get()
            # the sixth positional argument is example_index: only add one that is not given
            if keying is not None and len(args) < 6 and kwargs.get("example_index") is None:
                x = args[0] if args else kwargs["x"]
                kwargs["example_index"] = keying.index.to(x.device)
                keying.used = True
            super().__init__(*args, **kwargs)

    return RowKeyedCounterNoise


class rows_keyed:  # noqa: N801 - used as a context manager, named like one
    """Within the block, the drop-in's counter noise in this context is keyed by ``index``.

    Args:
        index (LongTensor[rows]): the rows' indices, in the order of the call's rows.
    """

    def __init__(self, index: Tensor) -> None:
        self.keying = Keying(index)

    def __enter__(self) -> Keying:
        module = sys.modules[_DROP_IN]
        with _LOCK:
            if _USERS[0] == 0:
                _ORIGINAL[0] = module.CounterNoise
                module.CounterNoise = _row_keyed_counter_noise()
            _USERS[0] += 1
        self.token = _ACTIVE.set(self.keying)
        return self.keying

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.reset(self.token)
        module = sys.modules[_DROP_IN]
        with _LOCK:
            _USERS[0] -= 1
            if _USERS[0] == 0:
                module.CounterNoise = _ORIGINAL[0]
