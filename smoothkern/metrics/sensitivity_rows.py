"""Joining the rows of several explanation calls into one, and splitting the results back.

Each call of the unfused sensitivity metric (a :class:`Segment`) has its own rows and keywords;
per-example keywords (targets, additional forward arguments, baselines) have been expanded to its
rows. Joined, the rows are concatenated, each per-example keyword becomes one value over all rows
(:class:`JoinedArgument`, sliced for a block of rows), and each row keeps its position in its own
call: the index its counter noise is keyed by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# Keywords Captum takes as a value or a tuple of values.
_EITHER_FORM = ("additional_forward_args", "baselines")


@dataclass
class Segment:
    """One explanation call of the unfused computation: its inputs and keywords.

    Args:
        inputs (tuple of Tensor[rows, ...]): what the call explains.
        kwargs: its keywords, per-example ones already expanded to its rows.
    """

    inputs: tuple[Tensor, ...]
    kwargs: dict[str, Any]

    @property
    def rows(self) -> int:
        return self.inputs[0].shape[0]


class JoinedArgument:
    """A per-example argument over the joined rows: ``rows(start, stop)`` is the value for a
    block of rows."""

    def __init__(self, shared: Any = None, parts: list[Any] | None = None,
                 children: list[JoinedArgument] | None = None) -> None:
        self.shared, self.children = shared, children
        self.joined: Any = None
        if parts is not None:
            self.joined = torch.cat(parts) if isinstance(parts[0], Tensor) else \
                [v for p in parts for v in p]

    def rows(self, start: int, stop: int) -> Any:
        if self.children is not None:
            return tuple(c.rows(start, stop) for c in self.children)
        if self.joined is not None:
            return self.joined[start:stop]
        return self.shared


def _join_value(values: list[Any], rows: list[int]) -> JoinedArgument | None:
    first = values[0]
    if all(v is first for v in values):
        return JoinedArgument(shared=first)
    if all(isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == r
           for v, r in zip(values, rows)):
        return JoinedArgument(parts=values)
    if all(isinstance(v, list) and len(v) == r for v, r in zip(values, rows)):
        return JoinedArgument(parts=values)
    if all(isinstance(v, tuple) and len(v) == len(first) for v in values):
        children = [_join_value([v[i] for v in values], rows) for i in range(len(first))]
        if all(c is not None for c in children):
            return JoinedArgument(children=children)    # type: ignore[arg-type]
    return None


def join_segments(segments: Sequence[Segment], per_row: tuple[str, ...]
                   ) -> tuple[tuple[Tensor, ...], dict[str, JoinedArgument], Tensor] | None:
    """The segments' rows joined: inputs, per-row keywords, and each row's position in its
    segment; None when a keyword cannot be joined (the segments then run one by one)."""
    rows = [s.rows for s in segments]
    names = set(segments[0].kwargs)
    if any(set(s.kwargs) != names for s in segments):
        return None
    kwargs: dict[str, JoinedArgument] = {}
    for name in names:
        values = [s.kwargs[name] for s in segments]
        if name in _EITHER_FORM and any(isinstance(v, tuple) for v in values):
            # one value or a 1-tuple of it mean the same; the expanded copies are tuples
            values = [v if isinstance(v, tuple) or v is None else (v,) for v in values]
        joined = _join_value(values, rows) if name in per_row else (
            JoinedArgument(shared=values[0]) if all(v is values[0] for v in values) else None)
        if joined is None:
            return None
        kwargs[name] = joined
    count = len(segments[0].inputs)
    if any(len(s.inputs) != count for s in segments):
        return None
    inputs = tuple(torch.cat([s.inputs[i] for s in segments]) for i in range(count))
    device = inputs[0].device
    index = torch.cat([torch.arange(r, device=device) for r in rows])
    return inputs, kwargs, index


def split_segments(pieces: list[tuple[Tensor, ...]], rows: list[int]
                    ) -> list[tuple[Tensor, ...]]:
    count = len(pieces[0])
    if any(len(p) != count for p in pieces):
        raise ValueError("the explanation function returned different numbers of tensors for "
                         "different calls")
    whole = [torch.cat([p[i] for p in pieces]) for i in range(count)]
    if any(t.shape[0] != sum(rows) for t in whole):
        raise ValueError(f"the explanation function must return one row per input row "
                         f"({sum(rows)}), got shapes {[tuple(t.shape) for t in whole]}")
    split = [t.split(rows) for t in whole]
    return [tuple(s[j] for s in split) for j in range(len(rows))]
