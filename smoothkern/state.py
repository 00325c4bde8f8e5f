"""Leaves the caller's model and tensors as they were: flags, requires_grad, .grad, hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

# Module attributes that hold hooks; only those a module actually has are saved.
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks_with_kwargs")
_BATCH_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
                    nn.modules.instancenorm._InstanceNorm)


def check_eval_mode(model: nn.Module) -> None:
    """Raises if a module whose output depends on the batch or on chance is in training mode."""
    offenders = [name or type(model).__name__ for name, module in model.named_modules()
                 if module.training and isinstance(module, _BATCH_DEPENDENT)]
    if offenders:
        shown = ", ".join(offenders[:3]) + (" ..." if len(offenders) > 3 else "")
        raise ValueError(f"the model is in training mode and has BatchNorm/Dropout layers "
                         f"({shown}): results would depend on the batch and on chance. "
                         "Call model.eval() first.")


@contextlib.contextmanager
def preserved(model: nn.Module, *tensors: Tensor, freeze_parameters: bool = True) -> Iterator[None]:
    """Restores the model's and tensors' state on exit, also after an exception.

    Inside, parameters do not require grad (input gradients need no weight gradients, and the
    backward pass skips them), so no parameter's ``.grad`` is touched.

    Args:
        model: the caller's model.
        tensors: the caller's input tensors; their ``requires_grad`` and ``.grad`` come back.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    hooks = [{name: dict(getattr(m, name)) for name in _HOOK_DICTS if hasattr(m, name)}
             for m in modules]
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    tensor_state = [(t.requires_grad, t.grad) for t in tensors if t.is_leaf]
    leaves = [t for t in tensors if t.is_leaf]
    try:
        if freeze_parameters:
            for p in params:
                p.requires_grad_(False)
        yield
    finally:
        for m, flag, saved in zip(modules, training, hooks):
            m.training = flag
            for name, entries in saved.items():
                current = getattr(m, name)
                if dict(current) != entries:
                    current.clear()
                    current.update(entries)
        for p, flag, grad in zip(params, requires, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for t, (flag, grad) in zip(leaves, tensor_state):
            t.requires_grad_(flag)
            t.grad = grad
