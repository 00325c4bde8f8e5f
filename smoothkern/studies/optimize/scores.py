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
from ...model_io import ModelCall, logits_of

_GRADIENT = Gradient()


class _ScoreRecorder(nn.Module):
    """Calls the model and keeps its (detached) logits; the model itself is not changed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scores: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = logits_of(self.model(x), None, x.shape[0])   # a ModelOutput's .logits too
        self.scores = out.detach()
        return out


def scores_and_gradient(model: nn.Module, x: Tensor, target: Tensor,
                        batch_size: int | None = None, examples: Tensor | None = None
                        ) -> tuple[Tensor, Tensor]:
    """The raw scores of a batch and the gradient of each row's target score.

    Args:
        model: the classifier (eval mode; parameters frozen by the caller for speed).
        x (Tensor[R, C, H, W]): pixels.
        target (LongTensor[R]): the class whose raw score (logit) is differentiated, per row.
        batch_size: rows per forward/backward pass (None: all at once); rows are independent,
            so the result does not depend on it.
        examples (LongTensor[R] | None): which example of a
            :class:`~smoothkern.model_io.ModelCall` each row is (its other inputs go with it);
            None: row r is example r.

    Returns:
        scores (Tensor[R, classes]), detached; grad (Tensor[R, C, H, W]) = d scores[r, target[r]]
        / d x[r].
    """
    outs, grads = [], []
    for rows in _chunks(x.shape[0], batch_size):
        recorder = _ScoreRecorder(_for_rows(model, rows, examples))
        grads.append(_GRADIENT.attribute(recorder, x[rows], target[rows]))
        outs.append(recorder.scores)
    return _cat(outs), _cat(grads)


def scores(model: nn.Module, x: Tensor, batch_size: int | None = None,
           examples: Tensor | None = None) -> Tensor:
    """The raw scores of a batch (Tensor[R, classes]), no gradient, ``batch_size`` rows a pass
    (``examples`` as in :func:`scores_and_gradient`)."""
    with torch.no_grad():
        return _cat([logits_of(_for_rows(model, rows, examples)(x[rows]), None,
                               rows.stop - rows.start)
                     for rows in _chunks(x.shape[0], batch_size)])


def _for_rows(model: nn.Module, rows: slice, examples: Tensor | None) -> nn.Module:
    """The model for rows ``rows``: a ModelCall keeps those examples' other inputs."""
    if not isinstance(model, ModelCall):
        return model
    index = torch.arange(rows.start, rows.stop) if examples is None else examples[rows]
    return model.subset(index.cpu())


def _chunks(count: int, batch_size: int | None) -> list[slice]:
    step = count if batch_size is None else batch_size
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)
