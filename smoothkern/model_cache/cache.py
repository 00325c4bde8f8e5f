"""The one per-model cache: everything derived from a model, held weakly, one lock per model.

Each model (any object calls are made on: a module, the drop-in's forward function) gets one
:class:`ModelEntry` the first time it is seen. The entry goes when the model goes (the cache
holds models weakly; nothing in an entry refers to its model, except a hook of the model that
a prepared copy shares, see :func:`clear_caches`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ..core.memory import is_out_of_memory
from ..core.planning import forward_measuring_saved_bytes
from ..core.state import module_parameters
from ..model_io import logits_of
from .fingerprint import fingerprint, without_values

LOGGER = logging.getLogger("smoothkern")
T = TypeVar("T")


@dataclass(eq=False)
class ModelEntry:
    """What is known about one model. Every field is a cache: clearing it costs time only."""

    # held by the entry points around the part of a call that touches the model
    lock: threading.RLock = field(default_factory=threading.RLock)
    # (preparations, input shape, dtype, device) -> prepare.Prepared
    prepared: dict = field(default_factory=dict)
    # (input shape, dtype, device) -> (tree, bytes autograd saves per row, classes)
    row_facts: dict = field(default_factory=dict)
    # (input shape, dtype, device) -> (tree, bytes autograd saves per row): integrated
    # gradients' probe of the module its passes run
    probes: dict = field(default_factory=dict)
    # for the module the passes run: {compute dtype: (the caller's model state, GraphedPasses)}
    graphs: dict = field(default_factory=dict)
    # what was said on the log about this model already
    said: set = field(default_factory=set)

    def forget(self) -> None:
        """Drops every cached fact; the lock stays (a call may hold it)."""
        self.prepared.clear()
        self.row_facts.clear()
        self.probes.clear()
        self.graphs.clear()
        self.said.clear()


_ENTRIES: weakref.WeakKeyDictionary[Any, ModelEntry] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def entry(model: Any) -> ModelEntry:
    """The model's entry, made on first use (thread-safe)."""
    found = _ENTRIES.get(model)
    if found is None:
        with _GUARD:
            found = _ENTRIES.get(model)
            if found is None:
                found = _ENTRIES[model] = ModelEntry()
    return found


def lock_owner(model: Any) -> Any:
    """What a call on ``model`` locks: a bound method's module (a forward function such as
    ``model.forward`` is a new object on each access), else the object itself."""
    owner = getattr(model, "__self__", None)
    return owner if isinstance(owner, nn.Module) else model


@contextlib.contextmanager
def model_lock(model: Any) -> Iterator[None]:
    """Serialises calls on one model: held around the part of a call that touches the model
    (its flags, ``requires_grad``, hooks, the prepared copy, drawn weights). Re-entrant: an
    entry point may call another on the same model. Calls on different models run
    concurrently. An object that cannot be weakly referenced is not locked (a call with it
    fails its own checks)."""
    try:
        lock = entry(lock_owner(model)).lock
    except TypeError:
        yield
        return
    with lock:
        yield


def serialised(entry_point: Callable[..., T]) -> Callable[..., T]:
    """An entry point whose first argument is the model, run under :func:`model_lock`."""
    @functools.wraps(entry_point)
    def call(model: Any, *args: Any, **kwargs: Any) -> T:
        with model_lock(model):
            return entry_point(model, *args, **kwargs)
    return call


def clear_caches() -> None:
    """Drops everything smoothkern keeps about models: prepared copies, clean-forward facts,
    probes and CUDA graphs (their memory goes once nothing else holds them).

    The cache holds models weakly, but a prepared copy shares the model's hooks, so a hook that
    refers to the model itself (a bound method of it) keeps the model alive through the cache
    until this is called."""
    with _GUARD:
        entries = list(_ENTRIES.values())
    for found in entries:
        with found.lock:
            found.forget()


def say_once(model: Any, level: int, message: str) -> None:
    """``message`` on the "smoothkern" logger, once per model."""
    found = entry(model)
    if message not in found.said:
        found.said.add(message)
        LOGGER.log(level, message)


# ----------------------------------------------------------------------------------------------
# clean-forward facts: bytes autograd saves per row and the number of classes, per model and
# input shape, measured by the first call's clean forward. Later calls run the clean forward
# without autograd, or skip it when the caller names the target (most of the fixed cost of a
# small job). What the saved tensors and the output shape depend on is the key; values do not.


def _shape_key(inputs: Tensor) -> tuple:
    return tuple(inputs.shape[1:]), inputs.dtype, inputs.device


def _tree(model: nn.Module, state: tuple | None = None) -> tuple:
    # the module tree, flags, plain attributes (a head chosen by a flag), hooks and which
    # tensors the model holds (a head swapped for another size), but not their values
    state = fingerprint(model) if state is None else state
    return (without_values(state),
            tuple(p.requires_grad for p in module_parameters(list(model.modules()))))


def known_row_facts(model: nn.Module, inputs: Tensor, state: tuple | None = None
                    ) -> tuple[int, int] | None:
    """(bytes autograd saves per row, classes) from an earlier clean forward of this model
    tree at this input shape, or None.

    Args:
        state: ``fingerprint(model)`` if taken already.
    """
    cached = entry(model).row_facts.get(_shape_key(inputs))
    return cached[1:3] if cached is not None and cached[0] == _tree(model, state) else None


def returns_tensor(model: nn.Module, inputs: Tensor) -> bool:
    """Whether the model's output at this input shape was a plain Tensor (not a ``ModelOutput``
    or a mapping whose logits :func:`smoothkern.model_io.logits_of` reads); True if unseen."""
    cached = entry(model).row_facts.get(_shape_key(inputs))
    return True if cached is None else cached[3]


def clean_forward(model: nn.Module, inputs: Tensor) -> tuple[Tensor, int]:
    """The model's logits for the clean inputs (read from its output by
    :func:`smoothkern.model_io.logits_of`: a Tensor, ``.logits`` or ``["logits"]``), checked to
    be [B, classes], and the bytes autograd saves per row (for sizing passes; measured once per
    model tree and input shape)."""
    key, tree = _shape_key(inputs), _tree(model)
    facts = entry(model).row_facts
    cached = facts.get(key)
    if cached is not None and cached[0] == tree:
        with torch.no_grad():
            out = model(inputs.detach())
        return logits_of(out, None, inputs.shape[0]), cached[1]
    out, row_bytes = forward_measuring_saved_bytes(model, inputs)
    logits = logits_of(out, None, inputs.shape[0])
    facts[key] = (tree, row_bytes, logits.shape[1], isinstance(out, Tensor))
    return logits, row_bytes


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in on ``device`` now, or None when it is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def saved_bytes_per_row(model: nn.Module, x: Tensor, state: tuple | None = None) -> int:
    """Bytes autograd saves per row of ``model`` at ``x``'s row shape: measured on one row
    (on all of ``x`` for a model that takes whole batches only, such as one called with
    per-example ``forward_kwargs``), once per model tree and row shape (integrated gradients
    sizes its steps with it).

    Under autocast the probe is the growth from one row to two: the weights' bf16/fp16 casts
    are saved for backward once per pass, not per row, and on one row they outweighed a
    ResNet18's activations tenfold (23.6 against 2.2 MiB at 32², which sized its bf16 passes
    at one sample).

    Args:
        state: ``fingerprint(model)`` if the caller has taken it already."""
    # under autocast a row saves other bytes (bf16 activations): the dtype is part of the key
    reduced = autocast_dtype(x.device)
    key, tree = (*_shape_key(x), reduced), _tree(model, state)
    probes = entry(model).probes
    cached = probes.get(key)
    if cached is None or cached[0] != tree:
        try:
            _, row_bytes = forward_measuring_saved_bytes(model, x[:1])
        except Exception as err:  # noqa: BLE001 - retried on the whole batch, else raised
            if is_out_of_memory(err) or x.shape[0] == 1:
                raise
            _, row_bytes = forward_measuring_saved_bytes(model, x)
        else:
            if reduced is not None:
                row_bytes = _growth_per_row(model, x, row_bytes)
        cached = probes[key] = (tree, row_bytes)
    return cached[1]


def _growth_per_row(model: nn.Module, x: Tensor, one_row_bytes: int) -> int:
    """Bytes saved per added row: two rows' saved bytes less one row's (``one_row_bytes``),
    at least the row itself; ``one_row_bytes`` when the model refuses two copies of a row."""
    two = x[:1].expand(2, *x.shape[1:]).contiguous()
    try:
        _, per_row = forward_measuring_saved_bytes(model, two)
    except Exception as err:  # noqa: BLE001 - e.g. per-example inputs of one row
        if is_out_of_memory(err):
            raise
        return one_row_bytes
    return max(2 * per_row - one_row_bytes, x[0].numel() * x.element_size())
