"""A prepared copy of the caller's model for the duration of a call: BatchNorm folded into the
convolution or linear layer before it, channels_last for convolutional models.

Input gradients of an eval-mode model do not need the model's own structure, only its function,
so the engine may run an equivalent, faster module. The caller's model is never changed: the
copy has its own containers; it shares every parameter and buffer it does not change (a folded
layer gets new weights, channels_last gives the convolutions' weights a second layout). The
copy is checked against the caller's model on the clean inputs (equal to float32 rounding, or
it is not used) and cached per model while the model's tensors are unchanged.

``"compile"`` wraps the copy in ``torch.compile`` (asked for by ``compile=True``): for long jobs,
since compiling costs seconds to minutes; it is never part of the defaults.

Methods that hook the modules the user named (guided backprop, Grad-CAM, guided Grad-CAM)
declare ``uses_model_structure`` and always run the caller's model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .state import hook_dicts, module_parameters

PREPARATIONS = ("fold_batchnorm", "channels_last", "compile")
# prepare=True: both measured faster on every CPU row (benchmarks/RESULTS.md, "Prepared copy")
DEFAULT_PREPARATIONS = ("fold_batchnorm", "channels_last")
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_preparations(prepare: bool | Iterable[str]) -> tuple[str, ...]:
    """True: :data:`DEFAULT_PREPARATIONS`; False or (): none; or the names to apply."""
    if prepare is True:
        return DEFAULT_PREPARATIONS
    if prepare is False or prepare is None:
        return ()
    if isinstance(prepare, str):
        prepare = (prepare,)
    names = tuple(prepare)
    for name in names:
        if name not in PREPARATIONS:
            raise ValueError(f"unknown preparation {name!r}; choose from {PREPARATIONS} (or "
                             "prepare=True / False)")
    return names


def usable_preparations(preparations: tuple[str, ...], passes: str) -> tuple[str, ...]:
    """The preparations a pass strategy can run: vmap cannot make a channels_last copy of its
    per-row inputs (torch.func refuses it)."""
    if passes == "vmap":      # torch.compile of vmap(grad(...)) also takes minutes: not offered
        return tuple(p for p in preparations if p not in ("channels_last", "compile"))
    return preparations


def prepared_model(model: nn.Module, x: Tensor, logits: Tensor | None,
                   preparations: tuple[str, ...], state: tuple | None = None) -> nn.Module:
    """The module the passes should run: a (cached) prepared copy, or ``model`` itself.

    Args:
        x (Tensor[B, ...]): the clean inputs; logits (Tensor[B, classes]): the caller's model's
            output for them (the copy must reproduce it); None: computed here if a copy has
            to be built (a cached copy needs none).
        preparations: names from :data:`PREPARATIONS`.
        state: ``fingerprint(model)`` if the caller has taken it already.
    """
    if not preparations:
        return model
    key = (preparations, tuple(x.shape[1:]), x.dtype, x.device)
    entries = _CACHE.setdefault(model, {})     # one entry per preparation set and input shape
    state = fingerprint(model) if state is None else state
    cached = entries.get(key)
    if cached is not None and cached[0] == state:
        if cached[1] is None:                   # nothing to prepare: the model itself
            return model
        if cached[2] == _flags(cached[1]):
            return cached[1]
    copy_ = _build(model, x, preparations)
    if copy_ is not model and not _same_function(copy_, model, x, logits):
        copy_ = model                   # folding changed what the model computes: not used
    if "compile" in preparations:       # around a copy: the cache must not hold the model
        copy_ = _wrapped(Compiled, _structural_copy(model) if copy_ is model else copy_)
    # The cache holds the model weakly: an entry never refers to it (None: the model itself).
    # The copy's own training flags too: code that ran it may have changed them. The state is
    # taken again: building ran the model, whose forward may rebind its attributes.
    state = fingerprint(model)
    entries[key] = (state, None, ()) if copy_ is model else (state, copy_, _flags(copy_))
    return copy_


def clear_cache() -> None:
    """Drops every cached prepared copy. The cache holds models weakly, but a copy shares the
    model's hooks, so a hook that refers to the model itself (a bound method of it) keeps the
    model alive through the cache until this is called."""
    _CACHE.clear()


def _flags(module: nn.Module) -> tuple[bool, ...]:
    return tuple(m.training for m in module.modules())


def fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or written in place (version
    counters), a module's plain attribute is rebound (the copy holds the values it was built
    with) or a hook is added or removed, so a cached copy is never stale.

    Returns:
        (modules, training flags, plain attributes, hooks, tensors as (id, address, version)).
    """
    modules = list(model.modules())
    tensors = module_parameters(modules) + [b for m in modules for b in m._buffers.values()
                                            if b is not None]
    return (tuple(id(m) for m in modules), tuple(m.training for m in modules),
            tuple(_plain_attributes(m) for m in modules), tuple(_hooks(m) for m in modules),
            tuple((id(t), t.data_ptr(), t._version) for t in tensors))


def without_values(state: tuple) -> tuple:
    """A :func:`fingerprint` that leaves out writes in place: for what reads the tensors'
    memory (a CUDA graph) or depends only on shapes, replacement is what matters."""
    return state[:-1] + (tuple(entry[:2] for entry in state[-1]),)


def _hooks(module: nn.Module) -> tuple:
    """The module's hooks by identity: a hook added or removed changes what a pass runs."""
    # handle ids come from a global counter and are never reused; function ids can be
    return tuple((name, tuple((key, id(h)) for key, h in entries.items()))
                 for name, entries in hook_dicts(module).items() if entries)


_VALUES = (int, float, bool, str, type(None))


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


def _build(model: nn.Module, x: Tensor, preparations: tuple[str, ...]) -> nn.Module:
    result = model
    if "fold_batchnorm" in preparations:
        pairs = _conv_bn_pairs(model, x)
        if pairs:
            result = _structural_copy(model)
            for layer_name, bn_name in pairs:
                layer, bn = result.get_submodule(layer_name), result.get_submodule(bn_name)
                fold = fuse_conv_bn_eval if isinstance(layer, nn.modules.conv._ConvNd) \
                    else fuse_linear_bn_eval
                folded = fold(layer, bn)
                folded.requires_grad_(False)
                _replace(result, layer_name, folded)
                identity = nn.Identity()
                identity.training = bn.training              # new modules keep the flags
                _replace(result, bn_name, identity)
    convs = [n for n, m in result.named_modules() if isinstance(m, nn.Conv2d)]
    if "channels_last" in preparations and x.dim() == 4 and convs:
        result = _structural_copy(result) if result is model else result
        for name in convs:
            conv = copy.copy(result.get_submodule(name))
            conv._parameters = dict(conv._parameters)
            conv._parameters["weight"] = nn.Parameter(
                conv.weight.detach().contiguous(memory_format=torch.channels_last),
                requires_grad=False)
            _replace(result, name, conv)
        result = _wrapped(ChannelsLast, result)
    return result


def _wrapped(wrapper: type[nn.Module], module: nn.Module) -> nn.Module:
    """``wrapper(module)`` with the module's own training flag (not train mode by default)."""
    out = wrapper(module)
    out.training = module.training
    return out


def _conv_bn_pairs(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """(layer, BatchNorm) names where the BatchNorm's input is the layer's output, each called
    once in a forward over ``x`` (found by hooks: works for models torch.fx cannot trace)."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, nn.Module] = {}
    calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_layer(module, args, out):
        calls[module] = calls.get(module, 0) + 1
        if isinstance(out, Tensor):
            outputs[id(out)] = module

    def before_bn(module, args):
        calls[module] = calls.get(module, 0) + 1
        if args and isinstance(args[0], Tensor) and id(args[0]) in outputs:
            pairs.append((outputs[id(args[0])], module))

    handles = []
    for module in model.modules():
        if isinstance(module, _FOLDABLE):
            handles.append(module.register_forward_hook(after_layer))
        elif isinstance(module, _BATCHNORM) and not module.training and \
                module.track_running_stats and module.running_mean is not None:
            handles.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    # a hooked module is not folded: its hooks must see the output they were written for
    return [(names[a], names[b]) for a, b in pairs
            if calls.get(a) == 1 and calls.get(b) == 1 and a in names and b in names
            and not _hooks(a) and not _hooks(b)]


def _structural_copy(model: nn.Module) -> nn.Module:
    """Every container copied (own ``_modules``/``_parameters``/``_buffers`` dicts), every
    parameter and buffer shared: replacing a submodule of the copy leaves ``model`` as it is."""
    clone = copy.copy(model)
    clone._parameters = dict(model._parameters)
    clone._buffers = dict(model._buffers)
    clone._modules = {name: None if child is None else _structural_copy(child)
                      for name, child in model._modules.items()}
    return clone


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, leaf = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    parent._modules[leaf] = new


def _same_function(candidate: nn.Module, model: nn.Module, x: Tensor,
                   logits: Tensor | None) -> bool:
    """The candidate's output equals the model's (``logits``, or computed) to 1e-4 of its
    largest value. On a GPU both run in exact float32: TF32 convolutions round the folded and
    the unfolded weights differently, by more than that."""
    with torch.no_grad(), _exact_float32(x.device):
        if logits is None or x.device.type == "cuda":
            logits = model(x)
        out = candidate(x)
    if not isinstance(out, Tensor) or out.shape != logits.shape:
        return False
    scale = logits.abs().amax().clamp_min(1e-12)
    return bool(((out.float() - logits.float()).abs().amax() / scale) <= 1e-4)


@contextlib.contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """TF32 off for CUDA convolutions and matmuls inside (the settings are restored after).

    Through ``fp32_precision`` where torch has it: once a user set TF32 that way, reading the
    legacy ``allow_tf32`` flags raises."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    new_api = hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv")
    targets = ((matmul, "fp32_precision"), (cudnn.conv, "fp32_precision")) if new_api else \
        ((matmul, "allow_tf32"), (cudnn, "allow_tf32"))
    exact = "ieee" if new_api else False
    saved = [getattr(owner, name) for owner, name in targets]
    for owner, name in targets:
        setattr(owner, name, exact)
    try:
        yield
    finally:
        for (owner, name), value in zip(targets, saved):
            setattr(owner, name, value)


class Compiled(nn.Module):
    """``torch.compile`` of ``module``, cached like any prepared copy; says once, on the
    "smoothkern" logger, that its first pass compiles (12-18 s for small CNNs on the 2-core CPU
    of benchmarks/RESULTS.md)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module)
        logging.getLogger("smoothkern").warning(
            "torch.compile: the first pass compiles the model (seconds to minutes on a CPU); "
            "later passes and calls reuse it")

    def forward(self, x: Tensor) -> Tensor:
        return self.compiled(x)


class ChannelsLast(nn.Module):
    """Runs ``module`` (its convolution kernels already channels_last) on channels_last
    inputs; gradients flow back to the caller's layout."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))
