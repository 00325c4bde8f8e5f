"""Data-set statistics of stored maps: per class (the class explained) and over all examples.

Each rank keeps one float64 :class:`~smoothkern.stats.StreamingStats` per class over the maps
it reads; the states are gathered and merged in rank order (Chan's merge, exact up to float64
rounding), so any number of processes gives the single-pass statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    def pack(self) -> Tensor:
        """The states as one Tensor[K, 1 + 4·numel] (count, mean, m2, abs_sum, log_sum)."""
        rows = [torch.cat([torch.tensor([float(s.count)], dtype=torch.float64),
                           s.mean.reshape(-1), s.m2.reshape(-1), s.abs_sum.reshape(-1),
                           s.log_sum.reshape(-1)]) for s in self.states]
        return torch.stack(rows)

    def merge_packed(self, packed: Tensor) -> None:
        """Merges another rank's :meth:`pack` into these states, class by class."""
        numel = int(torch.tensor(self.shape).prod()) if self.shape else 1
        for state, row in zip(self.states, packed):
            parts = row[1:].split(numel)
            other = StreamingStats(*(p.reshape(self.shape).clone() for p in parts),
                                   count=int(row[0]), eps=self.eps)
            state.merge(other)

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
