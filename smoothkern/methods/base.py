"""The protocol every base attribution method follows, so the engine never changes for a new one.

A method turns a batch of (noisy) inputs and a target class per row into one attribution per row.
Rows are independent (the model is in eval mode), so the engine may stack samples, noise levels,
examples, and (for methods that have them) integration steps in any batch it likes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..model_io import logits_of


class AttributionMethod:
    """Base class of the methods under noise.

    Subclasses implement :meth:`attribute`; the rest has defaults.

    Attributes:
        name: the name ``smooth_grad(method=...)`` accepts.
        rows_per_sample: model rows one noisy input costs (integrated gradients: ``n_steps``);
            the engine uses it to size passes.
        supports_vmap: whether :meth:`vmap_attribute` is implemented.
        uses_model_structure: the method hooks modules of the caller's model (by name or
            object), so the engine never swaps in a prepared copy
            (:mod:`smoothkern.model_cache.prepare`).
        supports_layer_noise: the method attributes to whatever its ``inputs`` are, so under
            ``noise_at=`` it can take a layer's noisy output in their place
            (:mod:`smoothkern.noise.layer`).
        capturable: one :meth:`attribute` call can be recorded as a CUDA graph and replayed
            (no host synchronisation, no Python state changed per pass); otherwise
            ``cuda_graphs=True`` runs its passes eagerly
            (:mod:`smoothkern.model_cache.cuda_graphs`).
        shares_graphs: set by a class (not inherited) whose public attributes are its whole
            configuration: two equal ones run the same kernels, so CUDA graphs captured for
            one serve the other in later calls. Other methods' graphs serve their own call.
    """

    name = "method"
    rows_per_sample = 1
    supports_vmap = False
    uses_model_structure = False
    supports_layer_noise = False
    capturable = True
    shares_graphs = False

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        """Attributions of a batch.

        Args:
            model: the classifier, in eval mode, parameters frozen by the engine.
            inputs (Tensor[R, ...]): detached inputs (noisy copies).
            target (LongTensor[R]): the class to explain, per row.

        Returns:
            Tensor[R, *self.output_shape(...)]
        """
        raise NotImplementedError

    def vmap_attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        """Same as :meth:`attribute`, computed with ``torch.func.vmap`` over rows."""
        raise NotImplementedError(f"method {self.name!r} has no torch.func.vmap path")

    def output_shape(self, model: nn.Module, example: Tensor) -> tuple[int, ...]:
        """Shape of one example's attribution (default: the input's shape).

        Args:
            example (Tensor[1, ...]): one clean example.
        """
        return tuple(example.shape[1:])

    def subset(self, index: Tensor) -> AttributionMethod:
        """The method for the examples at positions ``index`` (LongTensor[B']), for adaptive
        sample counts: a method holding per-example state (a baseline per example) returns a
        copy holding theirs; the rest return themselves."""
        return self

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        """Set-up held around all passes (hooks for guided backprop, Grad-CAM, ...).

        Whatever it installs must be removed on exit, also after an exception.
        """
        yield

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def logit_of_target(outputs: Tensor, target: Tensor) -> Tensor:
    """Σ_r outputs[r, target[r]]: one backward gives every row's own-class gradient.

    Args:
        outputs (Tensor[R, classes]), target (LongTensor[R]).
    """
    # a call that skipped the clean forward checks the output here (a model seen before)
    outputs = logits_of(outputs, None, target.shape[0])
    return outputs.gather(1, target.view(-1, 1)).sum()


def input_gradient(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """d logit[target] / d input for each row, by one batched forward and backward.

    Args:
        inputs (Tensor[R, ...]), target (LongTensor[R]).

    Returns:
        Tensor[R, ...] shaped like ``inputs``.
    """
    with torch.enable_grad():
        leaf = inputs.detach().requires_grad_(True)
        out = model(leaf)
        check_differentiable(out)
        (grad,) = torch.autograd.grad(logit_of_target(out, target), leaf)
    return grad


def check_differentiable(out: Tensor) -> None:
    """Raises when no gradient flows from the model's output back to its input (a forward run
    under ``torch.no_grad()`` or detached): every pass strategy refuses alike."""
    if not out.requires_grad:
        raise RuntimeError("no gradient flows through the model: its output does not depend on "
                           "the input through autograd (is the forward run under "
                           "torch.no_grad(), or detached?)")


def vmap_input_gradient(model: nn.Module, inputs: Tensor, target: Tensor,
                        classes: int | None = None) -> Tensor:
    """``input_gradient`` through ``torch.func.vmap(torch.func.grad(...))`` over rows."""
    with torch.enable_grad():  # vmap(grad) would return zeros silently: probe one row
        probe = model(inputs[:1].detach().requires_grad_(True))
    check_differentiable(probe)
    classes = probe.shape[1] if classes is None else classes
    one_hot = torch.nn.functional.one_hot(target, classes).to(inputs.dtype)

    def logit(x: Tensor, select: Tensor) -> Tensor:
        return (model(x.unsqueeze(0))[0] * select).sum()

    with torch.enable_grad():
        return torch.func.vmap(torch.func.grad(logit))(inputs.detach(), one_hot)
