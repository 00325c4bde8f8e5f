"""Which BatchNorms can be folded into the layer before them, and the folded weights.

A norm is paired with a layer only when the norm's input *is* the layer's output tensor and
nothing else reads that tensor: a DenseNet norm reads a concatenation (no layer's output), a
pre-activation block or a skip connection reads the convolution's output a second time, timm's
LeViT normalises a Linear's output flattened over tokens (another tensor): all left alone.
Pairs are found by running the model once with hooks and a torch function mode that counts
every other use of each layer output (works for models torch.fx cannot trace).

The folded weights are a pure function of the caller's current tensors (:func:`folded_values`),
so a prepared copy derives them afresh on every call: writes through ``.data`` are seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from .fingerprint import hooks_of

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def foldable_pairs(model: nn.Module, x: Tensor,
                   run: Callable[[nn.Module, Tensor], Any]) -> list[tuple[str, str]]:
    """(layer, BatchNorm) names that can be folded: the norm (eval mode, running statistics)
    reads exactly the layer's output, nothing else reads it, each runs once in a forward over
    ``x``, neither has hooks of its own, and the norm's channels are the layer's outputs."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[Tensor, nn.Module]] = {}   # the tensors themselves: ids stay theirs
    uses: dict[int, int] = {}
    calls: dict[nn.Module, int] = {}
    found: list[tuple[nn.Module, nn.Module, Tensor]] = []
    inside_norm = [0]

    def after_layer(module: nn.Module, args: tuple, out: Any) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(out, Tensor):
            outputs[id(out)] = (out, module)
            uses[id(out)] = 0

    def before_norm(module: nn.Module, args: tuple) -> None:
        calls[module] = calls.get(module, 0) + 1
        hit = outputs.get(id(args[0])) if args and isinstance(args[0], Tensor) else None
        if hit is not None and hit[0] is args[0]:
            found.append((hit[1], module, args[0]))
        inside_norm[0] += 1

    def after_norm(module: nn.Module, args: tuple, out: Any) -> None:
        inside_norm[0] -= 1

    class CountUses(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if not inside_norm[0]:                 # the norm's own use of its input is fine
                for leaf in tree_leaves((args, kwargs)):
                    if isinstance(leaf, Tensor):
                        hit = outputs.get(id(leaf))
                        if hit is not None and hit[0] is leaf:
                            uses[id(leaf)] += 1
            return func(*args, **kwargs)

    handles = []
    for module in model.modules():
        if isinstance(module, FOLDABLE):
            handles.append(module.register_forward_hook(after_layer))
        elif isinstance(module, BATCHNORM) and not module.training and \
                module.track_running_stats and module.running_mean is not None:
            handles.append(module.register_forward_pre_hook(before_norm))
            handles.append(module.register_forward_hook(after_norm))
    try:
        with torch.no_grad(), CountUses():
            run(model, x)
    finally:
        for handle in handles:
            handle.remove()
    # a hooked module is not folded: its hooks must see the output they were written for
    return [(names[layer], names[norm]) for layer, norm, out in found
            if calls.get(layer) == 1 and calls.get(norm) == 1 and uses[id(out)] == 0
            and layer in names and norm in names and not hooks_of(layer) and not hooks_of(norm)
            and _channels_match(layer, norm, out)]


def _channels_match(layer: nn.Module, norm: nn.Module, out: Tensor) -> bool:
    """The norm normalises dim 1 of its input: the layer's output channels for a convolution,
    its features only for a Linear with [N, features] output (not [N, tokens, features])."""
    if isinstance(layer, nn.Linear) and out.dim() != 2:
        return False
    return out.dim() >= 2 and out.shape[1] == layer.weight.shape[0] == norm.num_features


def folded_values(layer: nn.Module, norm: nn.Module) -> dict[str, Tensor]:
    """The weight and bias of ``norm(layer(x))`` as one layer, from their current tensors
    (eval-mode arithmetic: the running statistics; either module's training flag is ignored,
    a convolution's output does not depend on it)."""
    scale, bias = _scale_and_bias(layer, norm)
    weight = layer.weight
    return {"weight": (weight * scale).to(weight.dtype), "bias": bias.to(weight.dtype)}


def fold_into(layer: nn.Module, norm: nn.Module, out: dict[str, Tensor]) -> None:
    """:func:`folded_values` written into ``out["weight"]`` and ``out["bias"]`` in place (their
    layout kept: one read of the layer's weight and one write, no new tensor of its size)."""
    scale, bias = _scale_and_bias(layer, norm)
    torch.mul(layer.weight, scale.to(out["weight"].dtype), out=out["weight"])
    out["bias"].copy_(bias)


def _scale_and_bias(layer: nn.Module, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """(per-output scale shaped to broadcast over the weight, folded bias)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    bias = shift if layer.bias is None else layer.bias * scale + shift
    return scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1)), bias
