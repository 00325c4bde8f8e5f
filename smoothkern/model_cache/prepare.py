"""A prepared copy of the caller's model: BatchNorm folded into the convolution or linear layer
before it, channels_last for convolutional models.

Input gradients of an eval-mode model do not need the model's own structure, only its function,
so the engine may run an equivalent, faster module. The caller's model is never changed: the
copy has its own containers and shares every parameter and buffer it does not change. The
tensors it does change (folded weights, channels_last weights) are written afresh from the
caller's current tensors at the start of every call (:meth:`Prepared.refresh`; its cost is in
benchmarks/RESULTS.md), so writes through ``.data`` are seen; the structure is cached per model
and input shape while the model's fingerprint without values is unchanged.

The copy is an optimisation, never a risk. Each preparation set is a candidate: if building or
checking it raises, or its output differs from the caller's model on the clean inputs (beyond
float32 rounding), the next candidate is tried
(fewer preparations, then the caller's model). The outcome is remembered for the model and said
once on the "smoothkern" logger at INFO. With process-wide module hooks registered
(``torch.nn.modules.module.register_module_forward_hook`` ...) the caller's model runs: those
hooks see every module call, and the copy's modules are others.

``"compile"`` wraps the copy in ``torch.compile`` (asked for by ``compile=True``): for long jobs,
since compiling costs seconds to minutes; it is never part of the defaults.

Methods that hook the modules the user named (guided backprop, Grad-CAM, guided Grad-CAM)
declare ``uses_model_structure`` and always run the caller's model.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..core.memory import is_out_of_memory
from ..ops.backends import PassStrategy
from .cache import entry, say_once
from .fingerprint import fingerprint, global_hooks, without_values
from .fold import fold_into, foldable_pairs, folded_values
from .toggles import exact_float32

PREPARATIONS = ("fold_batchnorm", "channels_last", "compile")
# prepare=True: both measured faster on every CPU row (benchmarks/RESULTS.md, "Prepared copy")
DEFAULT_PREPARATIONS = ("fold_batchnorm", "channels_last")
Run = Callable[[nn.Module, Tensor], Any]


def call_module(module: nn.Module, x: Tensor) -> Any:
    """How the checks run a module by default: ``module(x)``."""
    return module(x)


def check_preparations(prepare: bool | Iterable[str]) -> tuple[str, ...]:
    """True: :data:`DEFAULT_PREPARATIONS`; False or (): none; or the names to apply."""
    if prepare is True:
        return DEFAULT_PREPARATIONS
    if prepare is False or prepare is None:
        return ()
    if isinstance(prepare, str):
        prepare = (prepare,)
    try:
        names = tuple(prepare)
    except TypeError:
        raise TypeError(f"prepare must be True, False or preparation names from "
                        f"{PREPARATIONS}, got {prepare!r}") from None
    for name in names:
        if name not in PREPARATIONS:
            raise ValueError(f"unknown preparation {name!r}; choose from {PREPARATIONS} (or "
                             "prepare=True / False)")
    return names


def usable_preparations(preparations: tuple[str, ...], passes: str) -> tuple[str, ...]:
    """The preparations a pass strategy can run: vmap cannot make a channels_last copy of its
    per-row inputs (torch.func refuses it)."""
    # torch.compile of vmap(grad(...)) also takes minutes: not offered
    if PassStrategy(passes) is PassStrategy.VMAP:
        return tuple(p for p in preparations if p not in ("channels_last", "compile"))
    return preparations


class Prepared:
    """One cached outcome: the copy (None: the caller's model runs), the preparations it has,
    and the tensors it derives from the caller's model as ``(owner, write)``: ``write(params)``
    writes the current values into the parameters of the copy's module ``owner``."""

    def __init__(self, structure: tuple, module: nn.Module | None, used: tuple[str, ...],
                 derived: list[tuple[nn.Module, Callable[[dict], None]]]) -> None:
        self.structure, self.module, self.used, self.derived = structure, module, used, derived
        self.flags = None if module is None else _flags(module)

    def fresh(self, structure: tuple) -> bool:
        """Built for this structure, and code that ran the copy left its flags alone."""
        return self.structure == structure and (
            self.module is None or self.flags == _flags(self.module))

    def refresh(self) -> None:
        """Writes the derived tensors afresh from the caller's current tensors. (Not checked
        again: a fold is exact algebra on a pair whose structure was checked; values change
        only its float32 rounding.)"""
        with torch.no_grad():
            for owner, write in self.derived:
                write(owner._parameters)


def prepared_model(model: nn.Module, x: Tensor, logits: Tensor | None,
                   preparations: tuple[str, ...], state: tuple | None = None,
                   run: Run | None = None) -> nn.Module:
    """The module the passes should run: a (cached, refreshed) prepared copy, or ``model``.

    Never raises for the model's sake: a copy that cannot be built or checked is not used.

    Args:
        x (Tensor[B, ...]): the clean inputs; logits (Tensor[B, classes]): the caller's model's
            output for them (the copy must reproduce it); None: computed here when needed.
        preparations: names from :data:`PREPARATIONS`.
        state: ``fingerprint(model)`` if the caller has taken it already.
        run: how to run a module on ``x`` for the checks (default ``module(x)``).
    """
    if not preparations:
        return model
    if global_hooks():
        say_once(model, logging.INFO, "prepare: the model runs unprepared while process-wide "
                 "module hooks are registered (they would see the copy's modules instead)")
        return model
    run = call_module if run is None else run
    cached = entry(model).prepared
    key = (preparations, tuple(x.shape[1:]), x.dtype, x.device)
    structure = without_values(fingerprint(model) if state is None else state)
    record = cached.get(key)
    if record is not None and record.fresh(structure):
        if record.module is None:
            return model
        try:
            record.refresh()
            return record.module
        except Exception as err:  # noqa: BLE001 - any failure of the copy: not used
            if is_out_of_memory(err):
                return model
            _said(model, record.used, _describe(err))
        record = _choose(model, x, logits, preparations, run, failed=record.used)
    else:
        record = _choose(model, x, logits, preparations, run)
    if record is None:                  # out of memory: not remembered, tried again next call
        return model
    # The state is taken again: building ran the model, whose forward may rebind attributes.
    record.structure = without_values(fingerprint(model))
    cached[key] = record
    return model if record.module is None else record.module


def _choose(model: nn.Module, x: Tensor, logits: Tensor | None, preparations: tuple[str, ...],
            run: Run, failed: tuple[str, ...] | None = None) -> Prepared | None:
    """The first candidate, most preparations first, that builds and agrees with the model
    (``failed``: a candidate known to differ, skipped)."""
    compile_ = "compile" in preparations
    names = tuple(p for p in preparations if p != "compile")
    for candidate in _candidates(names):
        if candidate == failed:
            continue
        try:
            built = _build(model, x, candidate, run)
            if built is not None and not _agrees(built[0], model, x, logits, run):
                _said(model, candidate, "its output differs from the model's on the clean "
                      "inputs")
                continue
        except Exception as err:  # noqa: BLE001 - any failure of the copy: the next one
            if is_out_of_memory(err):
                return None
            _said(model, candidate, _describe(err))
            continue
        if built is None:           # nothing to prepare: fewer preparations find nothing either
            break
        module, derived = built
        if compile_:
            module = _wrapped(Compiled, module)
        return Prepared((), module, candidate, derived)
    if compile_:
        return Prepared((), _wrapped(Compiled, _structural_copy(model)), ("compile",), [])
    return Prepared((), None, (), [])


def _candidates(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``names``, larger first, in the given order."""
    return [c for size in range(len(names), 0, -1) for c in itertools.combinations(names, size)]


def _said(model: nn.Module, candidate: tuple[str, ...], reason: str) -> None:
    say_once(model, logging.INFO, f"prepare: {'+'.join(candidate)} not used for "
             f"{type(model).__name__}: {reason}; trying fewer preparations, then the model")


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _flags(module: nn.Module) -> tuple[bool, ...]:
    return tuple(m.training for m in module.modules())


def _build(model: nn.Module, x: Tensor, preparations: tuple[str, ...], run: Run
           ) -> tuple[nn.Module, list] | None:
    """(the copy, its derived tensors), or None when there is nothing to prepare."""
    result, derived = model, []
    with torch.no_grad():
        if "fold_batchnorm" in preparations:
            pairs = foldable_pairs(model, x, run)
            if pairs:
                result = _structural_copy(model)
                for layer_name, norm_name in pairs:
                    layer, norm = model.get_submodule(layer_name), model.get_submodule(norm_name)
                    folded = copy.copy(result.get_submodule(layer_name))
                    folded._parameters = {
                        name: nn.Parameter(value, requires_grad=False)
                        for name, value in folded_values(layer, norm).items()}
                    derived.append((folded, lambda out, layer=layer, norm=norm:
                                    fold_into(layer, norm, out)))
                    _replace(result, layer_name, folded)
                    identity = nn.Identity()
                    identity.training = norm.training            # new modules keep the flags
                    _replace(result, norm_name, identity)
        convs = [n for n, m in result.named_modules() if isinstance(m, nn.Conv2d)]
        if "channels_last" in preparations and x.dim() == 4 and convs:
            result = _structural_copy(result) if result is model else result
            folded_owners = {id(owner) for owner, _ in derived}
            for name in convs:
                conv = result.get_submodule(name)
                if id(conv) not in folded_owners:      # its own copy, reading the caller's
                    conv = copy.copy(conv)
                    conv._parameters = dict(conv._parameters)
                    source = model.get_submodule(name)
                    derived.append((conv, lambda out, source=source:
                                    out["weight"].copy_(source.weight)))
                    _replace(result, name, conv)
                conv._parameters["weight"] = nn.Parameter(
                    conv.weight.detach().contiguous(memory_format=torch.channels_last),
                    requires_grad=False)
            result = _wrapped(ChannelsLast, result)
    return None if result is model else (result, derived)


def _wrapped(wrapper: type[nn.Module], module: nn.Module) -> nn.Module:
    """``wrapper(module)`` with the module's own training flag (not train mode by default)."""
    out = wrapper(module)
    out.training = module.training
    return out


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


def _agrees(candidate: nn.Module, model: nn.Module, x: Tensor, logits: Tensor | None,
            run: Run) -> bool:
    """The candidate's output equals the model's (``logits``, or computed) to 1e-4 of its
    largest value. On a GPU both run in exact float32: TF32 convolutions round the folded and
    the unfolded weights differently, by more than that."""
    with torch.no_grad(), exact_float32(x.device):
        if logits is None or x.device.type == "cuda":
            logits = run(model, x)
        out = run(candidate, x)
    if not isinstance(out, Tensor) or not isinstance(logits, Tensor) or \
            out.shape != logits.shape:
        return False
    scale = logits.abs().amax().clamp_min(1e-12)
    return bool(((out.float() - logits.float()).abs().amax() / scale) <= 1e-4)


class Compiled(nn.Module):
    """``torch.compile`` of ``module``, cached like any prepared copy; says once, on the
    "smoothkern" logger, that its first pass compiles (seconds to minutes on a CPU,
    benchmarks/RESULTS.md)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module)
        logging.getLogger("smoothkern").warning(
            "torch.compile: the first pass compiles the model (seconds to minutes on a CPU); "
            "later passes and calls reuse it")

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.compiled(x, *args, **kwargs)


class ChannelsLast(nn.Module):
    """Runs ``module`` (its convolution kernels already channels_last) on channels_last
    inputs; gradients flow back to the caller's layout."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.module(x.contiguous(memory_format=torch.channels_last), *args, **kwargs)
