"""Everything smoothkern derives from a model, in one place: never stale, never a reason for a
call to fail.

Layout:

- :mod:`.fingerprint`: the one fingerprint of a model (module tree, flags, plain attributes,
  hooks, process-wide module hooks, tensors by identity, address and version).
- :mod:`.cache`: one weak per-model cache (:class:`~.cache.ModelEntry`: the prepared copies,
  the clean-forward facts, integrated gradients' memory probe, the CUDA graphs) and one lock
  per model (:func:`model_lock`).
- :mod:`.prepare` and :mod:`.fold`: the prepared copy (BatchNorm folded, channels_last).
- :mod:`.cuda_graphs`: the CUDA graphs kept across calls.

The freshness rule. A cached fact is used only while the model's fingerprint (or, for what
depends on structure only, the fingerprint without values) equals the one it was made under:
a replaced parameter or buffer, a swapped module, a changed flag, a rebound plain attribute, a
module hook or a process-wide module hook added or removed all make a new entry. Values are
never cached: what is derived from them (the prepared copy's folded and channels_last weights)
is written afresh from the caller's current tensors at the start of every call, so writes no
fingerprint can see (``p.data.mul_``, EMA updates, ``running_mean.data.zero_()``) are followed
too. CUDA graphs read tensors by
address, so they see values written in place as they are.

The prepared copy is an optimisation, never a risk: a copy that cannot be built or checked, or
that differs from the model, is replaced by one with fewer preparations, then by the model
itself; the outcome is remembered for the model and said once on the "smoothkern" logger (INFO).

Threads: calls on one model are serialised by :func:`model_lock` (the entry points hold it
around the part of a call that touches the model); calls on different models run concurrently.

:func:`clear_caches` (``smoothkern.clear_caches``) drops it all.
"""

from __future__ import annotations

from .cache import (
    clean_forward,
    clear_caches,
    known_row_facts,
    model_lock,
    returns_tensor,
    saved_bytes_per_row,
    serialised,
)
from .fingerprint import fingerprint, without_values
from .prepare import (
    DEFAULT_PREPARATIONS,
    PREPARATIONS,
    check_preparations,
    prepared_model,
    usable_preparations,
)

__all__ = ["DEFAULT_PREPARATIONS", "PREPARATIONS", "check_preparations", "clean_forward",
           "clear_caches", "fingerprint", "known_row_facts", "model_lock", "prepared_model",
           "returns_tensor", "saved_bytes_per_row", "serialised", "usable_preparations",
           "without_values"]
