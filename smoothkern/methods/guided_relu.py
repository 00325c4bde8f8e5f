"""The guided-backprop ReLU rule as hooks on ``nn.ReLU`` modules, and a check for functional ReLUs.

Guided backprop passes a gradient back through a ReLU only where both the forward input and the
incoming gradient are positive. A tensor hook on each ReLU module's output clamps the incoming
gradient at zero; the ReLU's own backward then applies the forward mask. That equals Captum's
rule (a ReLU on the gradient of the ReLU's input) and works for in-place ReLUs too.

Hooks only see modules. A ReLU called as a function (``F.relu``, ``torch.relu``, ``x.relu_()``)
would silently get the plain gradient rule, so after each forward pass the autograd graph is
searched for ReLU nodes that no hooked module made; if there are any, an error says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

_RELU_NODES = ("ReluBackward0", "ReluBackward1")


def _clamp_negative(grad: Tensor) -> Tensor:
    return grad.clamp_min(0)


class GuidedReluHooks:
    """Forward hooks on every ``nn.ReLU`` of a model; guided only while ``active``.

    Attributes:
        active: whether ReLU outputs get the guided gradient rule in the current forward pass.
        module_nodes: autograd nodes of the hooked ReLU calls since :meth:`start_pass`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self.active = False
        self.module_nodes: list[object] = []
        self._handles: list = []

    def install(self) -> GuidedReluHooks:
        for module in self.relus:
            self._handles.append(module.register_forward_hook(self._hook))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.module_nodes.clear()

    def start_pass(self) -> None:
        self.module_nodes.clear()

    def _hook(self, module: nn.Module, args: tuple, out: Tensor) -> None:
        if self.active and isinstance(out, Tensor) and out.requires_grad:
            self.module_nodes.append(out.grad_fn)
            out.register_hook(_clamp_negative)

    def check_no_functional_relu(self, root: Tensor) -> None:
        """Raises if the graph below ``root`` has ReLU nodes no hooked module created."""
        hooked = {id(node) for node in self.module_nodes}
        stack, seen, unhooked = [root.grad_fn], set(), 0
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if type(node).__name__ in _RELU_NODES and id(node) not in hooked:
                unhooked += 1
            stack.extend(next_node for next_node, _ in node.next_functions)
        if unhooked:
            raise ValueError(
                f"guided backprop: the model applies ReLU as a function {unhooked} time(s) "
                "(F.relu, torch.relu or Tensor.relu) on the gradient path; only nn.ReLU modules "
                "can get the guided rule. Replace those calls with nn.ReLU modules.")


def check_has_relu(model: nn.Module) -> None:
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise ValueError("guided backprop needs nn.ReLU modules, and the model has none")


@contextlib.contextmanager
def guided_relu_hooks(model: nn.Module) -> Iterator[GuidedReluHooks]:
    """Installs :class:`GuidedReluHooks` on ``model``; removes them on exit, also after errors."""
    check_has_relu(model)
    hooks = GuidedReluHooks(model)
    try:
        yield hooks.install()
    finally:
        hooks.remove()
