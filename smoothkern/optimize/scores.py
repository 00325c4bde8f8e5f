"""Raw class scores and their input gradients in one pass, through the package's gradient method.

The optimisations need both at every step: the scores to see which images are done, the
gradient to move the rest. :class:`smoothkern.methods.Gradient` gives d score[target] / d input
for a batch (one forward, one backward); a thin recorder around the model keeps the forward's
scores, so no second forward is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..methods import Gradient

_GRADIENT = Gradient()


class _ScoreRecorder(nn.Module):
    """Calls the model and keeps its (detached) output; the model itself is not changed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scores: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        self.scores = out.detach() if isinstance(out, Tensor) else None
        return out


def scores_and_gradient(model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The raw scores of a batch and the gradient of each row's target score.

    Args:
        model: the classifier (eval mode; parameters frozen by the caller for speed).
        x (Tensor[R, C, H, W]): pixels.
        target (LongTensor[R]): the class whose raw score (logit) is differentiated, per row.

    Returns:
        scores (Tensor[R, classes]), detached; grad (Tensor[R, C, H, W]) = d scores[r, target[r]]
        / d x[r].
    """
    recorder = _ScoreRecorder(model)
    grad = _GRADIENT.attribute(recorder, x, target)
    return recorder.scores, grad


def scores(model: nn.Module, x: Tensor) -> Tensor:
    """The raw scores of a batch (Tensor[R, classes]), no gradient."""
    with torch.no_grad():
        return model(x)
