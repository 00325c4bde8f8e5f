"""Raw class scores and their input gradients in one pass, through the package's gradient method.

The optimisations need both at every step: the scores to see which images are done, the
gradient to move the rest. :class:`smoothkern.methods.Gradient` gives d score[target] / d input
for a batch (one forward, one backward); a thin recorder around the model keeps the forward's
scores, so no second forward is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...methods import Gradient

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


def scores_and_gradient(model: nn.Module, x: Tensor, target: Tensor,
                        batch_size: int | None = None) -> tuple[Tensor, Tensor]:
    """The raw scores of a batch and the gradient of each row's target score.

    Args:
        model: the classifier (eval mode; parameters frozen by the caller for speed).
        x (Tensor[R, C, H, W]): pixels.
        target (LongTensor[R]): the class whose raw score (logit) is differentiated, per row.
        batch_size: rows per forward/backward pass (None: all at once); rows are independent,
            so the result does not depend on it.

    Returns:
        scores (Tensor[R, classes]), detached; grad (Tensor[R, C, H, W]) = d scores[r, target[r]]
        / d x[r].
    """
    outs, grads = [], []
    for rows in _chunks(x.shape[0], batch_size):
        recorder = _ScoreRecorder(model)
        grads.append(_GRADIENT.attribute(recorder, x[rows], target[rows]))
        outs.append(recorder.scores)
    return _cat(outs), _cat(grads)


def scores(model: nn.Module, x: Tensor, batch_size: int | None = None) -> Tensor:
    """The raw scores of a batch (Tensor[R, classes]), no gradient, ``batch_size`` rows a pass."""
    with torch.no_grad():
        return _cat([model(x[rows]) for rows in _chunks(x.shape[0], batch_size)])


def _chunks(count: int, batch_size: int | None) -> list[slice]:
    step = count if batch_size is None else batch_size
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def _cat(parts: list) -> Tensor:
    # A model output that is not a tensor is passed on as is, for the caller's shape check.
    return parts[0] if len(parts) == 1 or not isinstance(parts[0], Tensor) else torch.cat(parts)
