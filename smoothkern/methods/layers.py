"""Finding a layer by dotted path, and capturing its activation and gradient in one pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .base import logit_of_target


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The module ``layer`` names (a dotted path like ``"features.3"``) or is, inside ``model``.

    Raises:
        ValueError: no such path, or a module object that is not part of ``model``.
    """
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_modules() if name][:12]
            raise ValueError(f"model has no layer {layer!r}; some layers it has: {names}") \
                from None
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
        return layer
    raise TypeError(f"layer must be a dotted module path or an nn.Module, got "
                    f"{type(layer).__name__}")


@contextlib.contextmanager
def capture(layer: nn.Module, use_input: bool) -> Iterator[list[Tensor]]:
    """Records the layer's output (or first input) during a forward pass.

    The model continues with a clone, so in-place ops after the layer cannot overwrite the
    recorded tensor (what Captum does too). The hook is removed on exit, also after an error.
    """
    seen: list[Tensor] = []

    def post(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        _check_tensor(out, "output")
        seen.append(out)
        return out.clone()

    def pre(module: nn.Module, args: tuple) -> tuple:
        _check_tensor(args[0] if args else None, "input")
        seen.append(args[0])
        return (args[0].clone(), *args[1:])

    handle = (layer.register_forward_pre_hook(pre) if use_input
              else layer.register_forward_hook(post))
    try:
        yield seen
    finally:
        handle.remove()


def _check_tensor(value: object, what: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"the layer's {what} must be a single Tensor to attribute to it, got "
                        f"{type(value).__name__}")


def layer_activation_and_gradient(model: nn.Module, layer: nn.Module, inputs: Tensor,
                                  target: Tensor, use_input: bool = False,
                                  grad_kwargs: dict | None = None) -> tuple[Tensor, Tensor]:
    """The layer's activation and d logit[target] / d activation, one forward and backward.

    Args:
        inputs (Tensor[R, ...]), target (LongTensor[R]).
        grad_kwargs: extra keyword arguments for ``torch.autograd.grad``.

    Returns:
        (activation, gradient), both Tensor[R, *layer_shape].
    """
    with torch.enable_grad(), capture(layer, use_input) as seen:
        leaf = inputs.detach().requires_grad_(True)
        selected = logit_of_target(model(leaf), target)
        if len(seen) != 1:
            raise ValueError(f"the layer ran {len(seen)} times in one forward pass; Grad-CAM "
                             "needs a layer that runs exactly once")
        (grad,) = torch.autograd.grad(selected, seen[0], **(grad_kwargs or {}))
    return seen[0].detach(), grad
