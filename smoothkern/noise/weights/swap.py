"""Runs the caller's model on other parameter values for a while, without writing its tensors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn


def parameter_slots(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """Every place a parameter sits: (owning module, attribute, canonical name).

    The canonical name is the parameter's name in ``model.named_parameters()``; a tied parameter
    sits in several places under one canonical name, so a swap keeps the tie.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    slots, seen = [], set()
    for name, param in model.named_parameters(remove_duplicate=False):
        path, _, attribute = name.rpartition(".")
        owner = model.get_submodule(path) if path else model
        if (id(owner), attribute) not in seen:       # one module reached by two paths
            seen.add((id(owner), attribute))
            slots.append((owner, attribute, canonical[id(param)]))
    return slots


@contextlib.contextmanager
def swapped_parameters(slots: list[tuple[nn.Module, str, str]], values: dict[str, Tensor]
                       ) -> Iterator[None]:
    """Inside, the model's parameters named in ``values`` are those tensors (as
    ``torch.func.functional_call`` places them: an entry of the owner's ``_parameters``); on exit
    the caller's own ``Parameter`` objects are back in place, also after an exception. Their
    values are never written.
    """
    saved = []
    try:
        for owner, attribute, name in slots:
            if name in values:
                saved.append((owner, attribute, owner._parameters[attribute]))
                owner._parameters[attribute] = values[name]
        yield
    finally:
        for owner, attribute, original in reversed(saved):
            owner._parameters[attribute] = original
