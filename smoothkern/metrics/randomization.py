"""Sanity checks by model randomisation (Adebayo et al., 2018), cascading and independent.

An explanation that reflects what the model learned must change when the learned weights are
replaced by random ones. Each parametrised layer (convolution, linear, normalisation, attention,
any module holding parameters of its own) is re-initialised in turn, from the output towards the
input, on a copy of the model; the explanation is recomputed and compared with the original one.

- ``cascading``: the layers stay randomised, so step l has the top l layers random.
- ``independent``: only layer l is random at step l (the others keep their trained weights).

**Re-initialisation.** A layer is re-initialised by its own ``reset_parameters`` (or
``_reset_parameters``, as ``nn.MultiheadAttention`` names it), the distribution its constructor
uses; normalisation layers therefore return to their initial state (scale 1, shift 0, running
statistics 0 and 1), which removes what they learned. A module with parameters but no reset
method gets, per parameter, U(-b, b) with b = 1/√fan_in (PyTorch's default for linear and
convolution weights; fan_in is the size of one output's slice of the first parameter with two or
more dimensions, or the parameter's own size when there is none). The draws are seeded from
``(seed, the layer's dotted name)`` and made on the CPU, so a layer gets the same random weights
in both modes, on every device and whatever the global random state (which is left untouched).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..core.state import check_eval_mode
from ..model_cache import serialised
from ..model_cache.toggles import attention_fast_path_off
from ..model_io import ModelCall, OutputSpec, adapt
from .faithfulness import _check_target, _logits
from .similarity import SIMILARITIES, map_similarity

MODES = ("cascading", "independent")
Explanation = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class RandomizationResult:
    """The result of ``model_randomization``.

    Attributes:
        layers: the dotted names of the layers, in the order they were randomised (top first).
        mode: "cascading" or "independent".
        target (LongTensor[B]): the class explained (the same for every model).
        original (Tensor[B, ...]): the explanation of the trained model.
        maps (Tensor[L, B, ...] | None): the explanation after each step (None when not kept).
        similarity: {measure: Tensor[L, B]} float64, per measure with and without absolute
            values ("spearman", "spearman_abs", "ssim", "ssim_abs", "top_k", "top_k_abs").
    """

    layers: tuple[str, ...]
    mode: str
    target: Tensor
    original: Tensor
    maps: Tensor | None
    similarity: dict[str, Tensor] = field(default_factory=dict)

    def mean_similarity(self) -> dict[str, Tensor]:
        """{measure: Tensor[L]}: the mean over examples, per layer (NaNs left out)."""
        return {name: values.nanmean(1) for name, values in self.similarity.items()}


@serialised
def model_randomization(model: nn.Module, inputs: Tensor,
                        target: int | Sequence[int] | Tensor | None = None, *,
                        explanation: Explanation | None = None, mode: str = "cascading",
                        layers: Sequence[str] | None = None, seed: int = 0,
                        measures: Sequence[str] = SIMILARITIES, top_k: int | float = 0.1,
                        keep_maps: bool = True, output: OutputSpec = None,
                        forward_args: Sequence[Any] | Any = None,
                        forward_kwargs: dict[str, Any] | None = None,
                        **explanation_options: Any) -> RandomizationResult:
    """Model-randomisation sanity check: explanations as the layers are re-initialised.

    Args:
        model: a classifier returning ``[B, classes]``, in eval mode if it has BatchNorm or
            Dropout. It is never changed: the layers are re-initialised on a copy.
        inputs (Tensor[B, ...]): the inputs explained.
        target: the class explained: None (the class the trained model predicts), an int, a
            sequence of ints or a LongTensor[B]. The same class is explained for every model.
        explanation: ``explanation(model, inputs, target) -> Tensor[B, ...]``; default
            ``smooth_grad`` with ``explanation_options`` (its seed is fixed, so the maps differ
            only through the weights).
        mode: "cascading" (the top l layers random at step l) or "independent" (only layer l).
        layers: the dotted names of the layers to randomise, in order; default every
            parametrised layer the forward pass runs, from the output to the input
            (``randomization_layers``).
        seed: the re-initialisation stream (0 ≤ seed < 2⁶⁴).
        measures: similarity measures: "spearman", "ssim" (image maps), "top_k".
        top_k: k of the top-k overlap: a number of features or a fraction of them.
        keep_maps: also return every map (``maps``), e.g. for ``randomization_figure``.
        output, forward_args, forward_kwargs: where the logits are in the model's output and
            its other inputs (:mod:`smoothkern.model_io`); also given to the default
            explanation (your own ``explanation`` binds them itself).
        explanation_options: ``smooth_grad`` arguments for the default explanation.

    Returns:
        RandomizationResult.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int within 0..2**64-1, got {seed!r}")
    if explanation is not None and explanation_options:
        raise TypeError(f"options {sorted(explanation_options)} are smooth_grad arguments; "
                        "with your own explanation, bind them in it")
    if explanation is not None and not callable(explanation):
        raise TypeError(f"explanation must be callable, got {type(explanation).__name__}")
    check_eval_mode(model)
    model_io = {k: v for k, v in (("output", output), ("forward_args", forward_args),
                                  ("forward_kwargs", forward_kwargs)) if v is not None}
    explain = explanation or _smooth_grad_explanation({**explanation_options, **model_io})
    work = copy.deepcopy(model)
    call = adapt(work, output, forward_args, forward_kwargs, inputs.shape[0])
    if layers is None:
        units = _layer_units(work, inputs, call)
    else:
        units = _named_units(work, layers)
    if not units:
        raise ValueError("the model has no parametrised layer to randomise")
    with torch.no_grad():
        target = _check_target(target, _logits(call, inputs.detach()))
    original = _explain(explain, work, inputs, target)
    maps, scores = [], []
    for name, unit, members in units:
        saved = copy.deepcopy(unit.state_dict()) if mode == "independent" else None
        reinitialize(unit, layer_seed(seed, name), members)
        current = _explain(explain, work, inputs, target)
        if saved is not None:
            unit.load_state_dict(saved)
        scores.append(map_similarity(original, current, measures=measures, top_k=top_k))
        if keep_maps:
            maps.append(current)
    similarity = {key: torch.stack([s[key].cpu() for s in scores]) for key in scores[0]}
    return RandomizationResult(layers=tuple(unit[0] for unit in units), mode=mode,
                               target=target, original=original,
                               maps=torch.stack(maps) if keep_maps else None,
                               similarity=similarity)


def randomization_layers(model: nn.Module, inputs: Tensor, *, output: OutputSpec = None,
                         forward_args: Sequence[Any] | Any = None,
                         forward_kwargs: dict[str, Any] | None = None) -> list[str]:
    """The dotted names of the parametrised layers, from the output to the input.

    A layer is a module with parameters of its own (or an ``nn.MultiheadAttention``, which
    takes its output projection along). The order is that in which the layers finish in one
    forward pass on ``inputs[:1]``, reversed; layers the forward pass does not run are left out,
    and a parametrised module that is not run itself but whose parameters an enclosing layer
    uses (the attention's ``out_proj``) belongs to that layer. ``output``, ``forward_args``,
    ``forward_kwargs``: as ``model_randomization``.
    """
    call = adapt(model, output, forward_args, forward_kwargs, inputs.shape[0])
    return [unit[0] for unit in _layer_units(model, inputs, call)]


def layer_seed(seed: int, name: str) -> int:
    """The re-initialisation seed of one layer: a hash of (seed, dotted name), 63 bits."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@torch.no_grad()
def reinitialize(layer: nn.Module, seed: int, members: Sequence[str] | None = None) -> None:
    """Re-initialises one layer in place, reproducibly (see the module's docstring).

    The draws are made on a CPU copy under a private random state and copied into the layer,
    so they do not depend on the device and the global random state is left as it was.

    Args:
        layer: the module to re-initialise.
        seed: its seed (``layer_seed``).
        members: dotted names, relative to ``layer`` ("" for itself), of the modules to reset;
            default the layer and everything inside it.
    """
    scratch = copy.deepcopy(layer).cpu()
    names = [name for name, _ in scratch.named_modules()] if members is None else list(members)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Innermost first, so that an enclosing layer's own reset (an attention zeroing its
        # output projection's bias) has the last word.
        for name in sorted(names, key=lambda n: -len(n.split(".")) if n else 0):
            _reset_module(scratch.get_submodule(name), generator)
    layer.load_state_dict(scratch.state_dict())


def _reset_module(module: nn.Module, generator: torch.Generator) -> None:
    reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters",
                                                                 None)
    if callable(reset):
        reset()
        return
    own = list(module.parameters(recurse=False))
    if not own:
        return
    shaped = [p for p in own if p.dim() >= 2]
    fan_in = shaped[0][0].numel() if shaped else None
    for p in own:
        n = fan_in if fan_in is not None else (p[0].numel() if p.dim() >= 2 else p.numel())
        bound = 1.0 / math.sqrt(max(1, n))
        p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64)
                .mul_(2 * bound).sub_(bound).to(p.dtype))


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or \
        any(True for _ in module.parameters(recurse=False))


def _layer_units(model: nn.Module, inputs: Tensor, call: nn.Module | None = None
                 ) -> list[tuple[str, nn.Module, list[str]]]:
    """(name, module, member names) of the layers that run, top first (``randomization_layers``).

    Members are the module itself ("") and the parametrised modules inside it that do not run
    on their own, or that sit inside an attention module. ``call``: how the model is called
    (a :class:`~smoothkern.model_io.ModelCall` around it; default the model itself).
    """
    call = model if call is None else call
    one = call.subset([0]) if isinstance(call, ModelCall) else call
    candidates = [(name, m) for name, m in model.named_modules() if _is_layer(m)]
    finished: list[str] = []
    handles = [m.register_forward_hook(lambda *_, name=name: finished.append(name))
               for name, m in candidates]
    try:
        # The attention fast path runs a whole encoder layer as one op: its parts would not run.
        with torch.no_grad(), attention_fast_path_off():
            _logits(one, inputs[:1].detach())
    finally:
        for handle in handles:
            handle.remove()
    attention = [name for name, m in candidates if isinstance(m, nn.MultiheadAttention)]
    inside_attention = {name for name, _ in candidates
                        if any(name.startswith(owner + ".") for owner in attention)}
    runs = [name for name in dict.fromkeys(finished) if name not in inside_attention]
    units = []
    for name in reversed(runs):                    # the order layers finish in, reversed
        prefix = name + "." if name else ""
        members = [""] + [other[len(prefix):] for other, _ in candidates
                          if other.startswith(prefix) and other != name
                          and (other not in runs or other in inside_attention)]
        units.append((name, model.get_submodule(name), members))
    return units


def _named_units(model: nn.Module, layers: Sequence[str]
                 ) -> list[tuple[str, nn.Module, list[str] | None]]:
    if isinstance(layers, str):
        raise TypeError("layers must be a sequence of dotted names, not one string")
    units = []
    for name in layers:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no module {name!r}") from None
        if not any(True for _ in module.parameters()):
            raise ValueError(f"module {name!r} has no parameters to randomise")
        units.append((name, module, None))
    if len({unit[0] for unit in units}) != len(units):
        raise ValueError(f"layers repeat a name: {list(layers)}")
    return units


def _smooth_grad_explanation(options: dict[str, Any]) -> Explanation:
    def explain(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        return smooth_grad(model, inputs, target, **options)
    return explain


def _explain(explain: Explanation, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    maps = explain(model, inputs, target)
    if not isinstance(maps, Tensor) or maps.shape[:1] != inputs.shape[:1]:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"the explanation must return a Tensor [B, ...] with B = "
                         f"{inputs.shape[0]}, got {shape}")
    return maps.detach()
