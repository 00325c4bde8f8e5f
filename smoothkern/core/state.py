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
    # Hook dicts live in each module's __dict__; copies of the non-empty ones are enough to
    # restore (an empty one only has to be emptied again).
    current_hooks = [hook_dicts(m) for m in modules]
    hooks = [(dicts, {name: dict(d) for name, d in dicts.items() if d}) for dicts in current_hooks]
    params = module_parameters(modules)
    requires = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    leaves = [t for t in tensors if t.is_leaf]
    tensor_state = [(t.requires_grad, t.grad) for t in leaves]
    try:
        if freeze_parameters:
            for p, flag in zip(params, requires):
                if flag:
                    p.requires_grad_(False)
        yield
    finally:
        for m, flag, (current, saved) in zip(modules, training, hooks):
            if m.training != flag:          # nn.Module.__setattr__ is slow: only when changed
                m.training = flag
            for name, entries in current.items():
                if (entries or name in saved) and entries != saved.get(name, {}):
                    entries.clear()
                    entries.update(saved.get(name, {}))
        for p, flag, grad in zip(params, requires, grads):
            if p.requires_grad != flag:
                p.requires_grad_(flag)
            if p.grad is not grad:
                p.grad = grad
        for t, (flag, grad) in zip(leaves, tensor_state):
            t.requires_grad_(flag)
            t.grad = grad


def hook_dicts(module: nn.Module) -> dict[str, dict]:
    """The module's hook dicts by attribute name (those its torch version has)."""
    attributes = vars(module)
    return {name: attributes[name] for name in _HOOK_DICTS if name in attributes}


def module_parameters(modules: list[nn.Module]) -> list[nn.Parameter]:
    """Every parameter of ``modules`` once (tied ones are shared), in ``parameters()`` order."""
    seen: dict[int, nn.Parameter] = {}
    for m in modules:
        for p in m._parameters.values():
            if p is not None:
                seen.setdefault(id(p), p)
    return list(seen.values())
