"""Data-set statistics of stored maps: per class (the class explained) and over all examples.

Each rank keeps one float64 :class:`~smoothkern.core.stats.StreamingStats` per class over the
maps it reads; the ranks' states are merged by sums (:meth:`ClassStats.reduce`: Chan's merge
written as two all-reduces, exact up to float64 rounding), so any number of processes gives the
single-pass statistics and no rank ever holds another rank's states (for 1000 classes of
224² RGB maps these are about 4.8 GB a rank).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..core.stats import AGGREGATES, StreamingStats


class ClassStats:
    """One float64 streaming state per class, over maps of shape ``shape``.

    Args:
        classes: K, the number of classes.
        shape: one map's shape.
        eps: the floor inside the geometric mean's log.
    """

    def __init__(self, classes: int, shape: Sequence[int], eps: float) -> None:
        self.shape = tuple(shape)
        self.eps = eps
        self.states = [StreamingStats.empty(self.shape, dtype=torch.float64, eps=eps)
                       for _ in range(classes)]

    def update(self, maps: Tensor, target: Tensor) -> None:
        """Adds maps (Tensor[n, *shape]) of examples of classes ``target`` (LongTensor[n])."""
        for c in torch.unique(target).tolist():
            self.states[c].update(maps[target == c].to(torch.float64))

    def reduce(self, sum_ranks: Callable[[Tensor], Tensor], classes_per_step: int = 16
               ) -> None:
        """Merges every rank's states into these, in place, on every rank.

        Chan's merge as sums: with n = Σ n_r and mean = Σ n_r·mean_r / n, the merged
        M2 = Σ (M2_r + n_r·(mean_r − mean)²), so two all-reduces per block of classes give the
        merged states (the abs and log sums are plain sums).

        Args:
            sum_ranks: an all-reduce sum over the ranks (every rank calls it in the same order).
            classes_per_step: classes per all-reduce (bounds the collective's buffer).
        """
        counts = sum_ranks(torch.tensor([float(s.count) for s in self.states],
                                        dtype=torch.float64))
        for start in range(0, len(self.states), classes_per_step):
            block = self.states[start:start + classes_per_step]
            n_r = torch.tensor([float(s.count) for s in block], dtype=torch.float64)
            n_r = n_r.view(-1, *([1] * len(self.shape)))
            means = torch.stack([s.mean for s in block])
            sums = sum_ranks(torch.stack([n_r * means, torch.stack([s.abs_sum for s in block]),
                                          torch.stack([s.log_sum for s in block])]))
            n = counts[start:start + len(block)].view_as(n_r)
            mean = torch.where(n > 0, sums[0] / n.clamp(min=1), torch.zeros_like(sums[0]))
            centred = torch.stack([s.m2 for s in block]) + n_r * (means - mean).square()
            centred = torch.where(n_r > 0, centred, torch.zeros_like(centred))
            m2 = sum_ranks(centred)
            for i, state in enumerate(block):
                state.mean, state.m2 = mean[i].clone(), m2[i].clone()
                state.abs_sum, state.log_sum = sums[1, i].clone(), sums[2, i].clone()
                state.count = int(n[i].item())

    def counts(self) -> Tensor:
        """LongTensor[K]: examples per class."""
        return torch.tensor([s.count for s in self.states], dtype=torch.int64)

    def total(self) -> StreamingStats:
        """All classes merged (in class order): the statistics over every example."""
        total = StreamingStats.empty(self.shape, dtype=torch.float64, eps=self.eps)
        for state in self.states:
            total.merge(state)
        return total

    def finalize(self, names: Sequence[str] = AGGREGATES) -> dict[str, Tensor]:
        """``{stat: Tensor[*shape]}`` over all examples and ``{"class_" + stat: Tensor[K,
        *shape]}`` per class (NaN rows for classes with no example), in float64."""
        out = {}
        total = self.total()
        if total.count:
            out.update(total.finalize(names))
        else:
            out.update({n: torch.full(self.shape, float("nan"), dtype=torch.float64)
                        for n in names})
        per_class = [s.finalize(names) if s.count else None for s in self.states]
        for name in names:
            out["class_" + name] = torch.stack([
                p[name] if p is not None else torch.full(self.shape, float("nan"),
                                                         dtype=torch.float64)
                for p in per_class])
        return out
