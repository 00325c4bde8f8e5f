"""The noise-source protocol and the chunk it hands the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Chunk:
    """The noisy rows of samples ``start .. start+count-1`` of every example.

    Attributes:
        start, count: the sample indices the chunk holds.
        rows (Tensor[count·S·B, ...]): noisy inputs, row ``(i·S + s)·B + b`` for sample
            ``start + i``, level ``s`` and example ``b``.
        extras: per-row tensors the method takes as keyword arguments (e.g. ``baseline``:
            Tensor[count·S·B, ...]), in the same row order.
    """

    start: int
    count: int
    rows: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def split(self) -> tuple[Chunk, Chunk]:
        """Two chunks of the same rows, split between samples (after an out-of-memory error:
        already drawn noise is reused, never drawn again)."""
        if self.count < 2:
            raise ValueError("a chunk of one sample cannot be split")
        first = self.count // 2
        per_sample = self.rows.shape[0] // self.count
        cut = first * per_sample

        def part(lo: int, hi: int | None) -> dict[str, Tensor]:
            return {name: value[lo:hi] for name, value in self.extras.items()}

        return (Chunk(self.start, first, self.rows[:cut], part(0, cut)),
                Chunk(self.start + first, self.count - first, self.rows[cut:], part(cut, None)))


class NoiseSource:
    """Draws noisy rows for the engine.

    Attributes:
        levels: S, noise levels drawn per sample (a sweep); 1 without one.
        batch: B, examples.
        rechunkable: True when any ``count`` may be drawn at any ``start`` (the draws are a
            pure function of the indices). A source that replays a fixed sequence of draws says
            False and fixes the chunk sizes itself (:meth:`chunk_size`).
    """

    levels: int = 1
    batch: int = 1
    rechunkable: bool = True

    def chunk_size(self, start: int, wanted: int) -> int:
        """Samples the next chunk from ``start`` holds, given the engine wants ``wanted``."""
        return wanted

    def draw(self, start: int, count: int) -> Chunk:
        raise NotImplementedError

    def subset(self, index: Tensor) -> NoiseSource:
        """The source for the examples at positions ``index`` (LongTensor[B'] into this
        source's batch), each keeping its own noise (adaptive sample counts drop examples)."""
        raise NotImplementedError(f"{type(self).__name__} cannot follow a subset of examples")
