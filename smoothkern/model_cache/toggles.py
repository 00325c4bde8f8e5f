"""Process-wide switches a call turns off for a while, safe when calls overlap in threads.

A plain save/set/restore around each call breaks when two calls overlap: the second saves the
first's "off", and whichever leaves last restores that, leaving the switch off for the process.
Here the first user saves the caller's setting and sets the call's value, later users only
count, and the last to leave restores the saved setting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

_LOCK = threading.Lock()
_USERS: dict[str, list] = {}       # switch name -> [users inside, the setting saved by the first]


@contextlib.contextmanager
def counted(name: str, read: Callable[[], Any], write: Callable[[Any], None],
            value: Any) -> Iterator[None]:
    """``write(value)`` inside; ``read()``'s setting back when the last overlapping user of
    the switch ``name`` leaves."""
    with _LOCK:
        users = _USERS.setdefault(name, [0, None])
        if users[0] == 0:
            users[1] = read()
            write(value)
        users[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            users[0] -= 1
            if users[0] == 0:
                write(users[1])
                users[1] = None


def attention_fast_path_off() -> contextlib.AbstractContextManager:
    """torch's fused attention fast path (``torch.backends.mha``) off inside: in eval mode
    without gradients, nn.MultiheadAttention / TransformerEncoderLayer would otherwise skip the
    submodules (and their hooks) a pass needs."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        return contextlib.nullcontext()
    return counted("mha_fast_path", mha.get_fastpath_enabled, mha.set_fastpath_enabled, False)


def exact_float32(device: torch.device) -> contextlib.AbstractContextManager:
    """TF32 off for CUDA convolutions and matmuls inside (nothing to change off CUDA).

    Through ``fp32_precision`` where torch has it: once a user set TF32 that way, reading the
    legacy ``allow_tf32`` flags raises."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    new_api = hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv")
    targets = ((matmul, "fp32_precision"), (cudnn.conv, "fp32_precision")) if new_api else \
        ((matmul, "allow_tf32"), (cudnn, "allow_tf32"))
    exact = "ieee" if new_api else False

    def read() -> list:
        return [getattr(owner, attr) for owner, attr in targets]

    def write(values: Any) -> None:
        for (owner, attr), v in zip(targets, values if isinstance(values, list) else
                                    [values] * len(targets)):
            setattr(owner, attr, v)

    return counted("tf32", read, write, exact)
