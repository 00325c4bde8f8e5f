"""Guided backpropagation: the input gradient with ReLUs passing only positive gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .base import AttributionMethod, logit_of_target
from .guided_relu import GuidedReluHooks, guided_relu_hooks


class GuidedBackprop(AttributionMethod):
    """Guided backprop (Springenberg et al. 2015) over ``nn.ReLU`` modules, like Captum's.

    ReLUs must be ``nn.ReLU`` modules (in-place or not); a model that calls ReLU as a function
    on the gradient path raises a ValueError naming the problem instead of silently returning
    the plain gradient.
    """

    name = "guided_backprop"
    shares_graphs = True
    uses_model_structure = True

    def __init__(self) -> None:
        self._hooks: GuidedReluHooks | None = None

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        with guided_relu_hooks(model) as hooks:
            self._hooks = hooks
            try:
                yield
            finally:
                self._hooks = None

    @contextlib.contextmanager
    def _hooks_for(self, model: nn.Module) -> Iterator[GuidedReluHooks]:
        if self._hooks is not None and self._hooks.model is model:
            yield self._hooks
        else:  # called outside a session: hooks for this call only
            with guided_relu_hooks(model) as hooks:
                yield hooks

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        with self._hooks_for(model) as hooks, torch.enable_grad():
            hooks.start_pass()
            hooks.active = True
            try:
                leaf = inputs.detach().requires_grad_(True)
                selected = logit_of_target(model(leaf), target)
            finally:
                hooks.active = False
            hooks.check_no_functional_relu(selected)
            (grad,) = torch.autograd.grad(selected, leaf)
            hooks.start_pass()
        return grad
