"""The one fingerprint of a model: what a cached fact about the model may depend on.

One walk of the module tree gives the modules, their training flags, plain attributes and hooks,
the process-wide module hooks, and each parameter and buffer as (identity, address, version).
Every cache of :mod:`smoothkern.model_cache` compares it (or :func:`without_values` of it) with
the fingerprint its entry was made under.

A write through ``.data`` (``p.data.mul_(2)``, EMA updates) changes neither the identity, the
address nor the version counter of the tensor, so no fingerprint can see it: what depends on
values is derived afresh per call instead (see :mod:`smoothkern.model_cache`).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules import module as _module

from ..core.state import hook_dicts, module_parameters

# torch's process-wide module hooks (register_module_forward_hook and friends): they run on
# every module of every model, a prepared copy's modules too.
_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks",
                 "_global_forward_hooks_always_called", "_global_forward_hooks_with_kwargs",
                 "_global_backward_pre_hooks", "_global_backward_hooks")
_VALUES = (int, float, bool, str, type(None))


def fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or written in place through autograd's
    view of it (version counters), a module's plain attribute is rebound, a module's hook or a
    process-wide module hook is added or removed, a module is swapped or a flag changes.

    Returns:
        (modules, training flags, plain attributes, hooks, global hooks, tensors as
        (id, address, version)); the tensors always last (:func:`without_values`).
    """
    modules = list(model.modules())
    tensors = module_parameters(modules) + [b for m in modules for b in m._buffers.values()
                                            if b is not None]
    return (tuple(id(m) for m in modules), tuple(m.training for m in modules),
            tuple(_plain_attributes(m) for m in modules), tuple(hooks_of(m) for m in modules),
            global_hooks(),
            tuple((id(t), t.data_ptr(), t._version) for t in tensors))


def without_values(state: tuple) -> tuple:
    """A :func:`fingerprint` that leaves out writes in place: for what reads the tensors'
    memory (a CUDA graph, a prepared copy refreshed per call) or depends only on shapes."""
    return state[:-1] + (tuple(entry[:2] for entry in state[-1]),)


def global_hooks() -> tuple:
    """The process-wide module hooks by handle id (empty when there are none)."""
    return tuple((name, tuple(getattr(_module, name))) for name in _GLOBAL_HOOKS
                 if getattr(_module, name, None))


def hooks_of(module: nn.Module) -> tuple:
    """The module's own hooks by identity: a hook added or removed changes what a pass runs."""
    # handle ids come from a global counter and are never reused; function ids can be
    return tuple((name, tuple((key, id(h)) for key, h in entries.items()))
                 for name, entries in hook_dicts(module).items() if entries)


def _plain_attributes(module: nn.Module) -> tuple:
    """The module's public attributes (a conv's stride, a user's flag): values for numbers,
    strings and flat tuples of them, identities for other objects (shared with the copy, so
    changes inside them are seen anyway). Tensors that are not parameters or buffers are left
    out: a forward that keeps its activations (``self.features = h``) rebinds them every call,
    and the cache would never hit. Register a tensor the forward reads as a buffer."""
    return tuple((name, value if type(value) in _VALUES or (
        type(value) is tuple and all(type(v) in _VALUES for v in value)) else id(value))
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, Tensor))
