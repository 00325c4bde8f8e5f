"""Data-set statistics of stored maps: per class (the class explained) and over all examples.

Each rank keeps one float64 :class:`~smoothkern.core.stats.StreamingStats` per class over the
maps it reads; the ranks' states are merged by sums (:meth:`ClassStats.reduce`: Chan's merge
written as two all-reduces, exact up to float64 rounding), so any number of processes gives the
single-pass statistics and no rank ever holds another rank's states (for 1000 classes of
224² RGB maps these are about 4.8 GB a rank).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..core.stats import AGGREGATES, StreamingStats


class ClassStats:
    """One float64 streaming state per class explained, over maps of shape ``shape``; a class's
    state is made when it is first seen (1000 ImageNet classes of 224² RGB maps hold 1.2 GB per
    state field, so classes a job never sees take nothing).

    Args:
        classes: K, the number of classes.
        shape: one map's shape.
        eps: the floor inside the geometric mean's log.
        device: where the states live and are updated (the job's GPU, where the float64
            updates take a fraction of the CPU's time).
    """

    def __init__(self, classes: int, shape: Sequence[int], eps: float,
                 device: torch.device | str = "cpu") -> None:
        self.classes = classes
        self.shape = tuple(shape)
        self.eps = eps
        self.device = torch.device(device)
        self.states: dict[int, StreamingStats] = {}

    def _state(self, c: int) -> StreamingStats:
        if c not in self.states:
            self.states[c] = StreamingStats.empty(self.shape, dtype=torch.float64, eps=self.eps,
                                                  device=self.device)
        return self.states[c]

    def update(self, maps: Tensor, target: Tensor) -> None:
        """Adds maps (Tensor[n, *shape]) of examples of classes ``target`` (LongTensor[n])."""
        maps = maps.to(self.device, torch.float64, non_blocking=True)
        target = target.to(self.device)
        for c in torch.unique(target).tolist():
            self._state(c).update(maps[target == c])

    def reduce(self, sum_ranks: Callable[[Tensor], Tensor], classes_per_step: int = 16
               ) -> None:
        """Merges every rank's states into these, in place, on every rank.

        Chan's merge as sums: with n = Σ n_r and mean = Σ n_r·mean_r / n, the merged
        M2 = Σ (M2_r + n_r·(mean_r − mean)²), so two all-reduces per block of classes give the
        merged states (the abs and log sums are plain sums). Only classes some rank saw are
        sent.

        Args:
            sum_ranks: an all-reduce sum over the ranks (every rank calls it in the same order).
            classes_per_step: classes per all-reduce (bounds the collective's buffer).
        """
        counts = sum_ranks(self.counts().to(torch.float64)).cpu()
        seen = counts.nonzero().flatten().tolist()
        for start in range(0, len(seen), classes_per_step):
            classes = seen[start:start + classes_per_step]
            block = [self._state(c) for c in classes]
            n_r = torch.tensor([float(s.count) for s in block], dtype=torch.float64,
                               device=self.device).view(-1, *([1] * len(self.shape)))
            means = torch.stack([s.mean for s in block])
            sums = sum_ranks(torch.stack([n_r * means, torch.stack([s.abs_sum for s in block]),
                                          torch.stack([s.log_sum for s in block])]))
            sums = sums.to(self.device)
            n = counts[classes].to(self.device).view_as(n_r)
            mean = sums[0] / n
            centred = torch.stack([s.m2 for s in block]) + n_r * (means - mean).square()
            centred = torch.where(n_r > 0, centred, torch.zeros_like(centred))
            m2 = sum_ranks(centred).to(self.device)
            for i, state in enumerate(block):
                state.mean, state.m2 = mean[i].clone(), m2[i].clone()
                state.abs_sum, state.log_sum = sums[1, i].clone(), sums[2, i].clone()
                state.count = int(n[i].item())

    def counts(self) -> Tensor:
        """LongTensor[K]: examples per class."""
        counts = torch.zeros(self.classes, dtype=torch.int64)
        for c, state in self.states.items():
            counts[c] = state.count
        return counts

    def total(self) -> StreamingStats:
        """All classes merged (in class order): the statistics over every example."""
        total = StreamingStats.empty(self.shape, dtype=torch.float64, eps=self.eps,
                                     device=self.device)
        for c in sorted(self.states):
            total.merge(self.states[c])
        return total

    def finalize_total(self, names: Sequence[str] = AGGREGATES) -> dict[str, Tensor]:
        """``{stat: Tensor[*shape]}`` over all examples (NaN when there are none), float64."""
        total = self.total()
        if total.count:
            return total.finalize(names)
        return {n: torch.full(self.shape, float("nan"), dtype=torch.float64, device=self.device)
                for n in names}

    def class_rows(self, names: Sequence[str] = AGGREGATES
                   ) -> Iterator[tuple[int, dict[str, Tensor]]]:
        """``(class, {stat: Tensor[*shape]})`` for each class with examples, in class order:
        one class's statistics at a time."""
        for c in sorted(self.states):
            if self.states[c].count:
                yield c, self.states[c].finalize(names)

    def finalize(self, names: Sequence[str] = AGGREGATES) -> dict[str, Tensor]:
        """``{stat: Tensor[*shape]}`` over all examples and ``{"class_" + stat: Tensor[K,
        *shape]}`` per class (NaN rows for classes with no example), in float64; all in memory
        at once (the store writes :meth:`class_rows` one by one instead)."""
        out = self.finalize_total(names)
        for name in names:
            out["class_" + name] = torch.full((self.classes, *self.shape), float("nan"),
                                              dtype=torch.float64, device=self.device)
        for c, values in self.class_rows(names):
            for name in names:
                out["class_" + name][c] = values[name]
        return out
