"""Drawn baselines: a per-row baseline for the method, beside another source's noisy rows."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .base import Chunk, NoiseSource

# (start, count) -> Tensor[count·B, ...]: the baselines of samples start..start+count-1
BaselineRows = Callable[[int, int], Tensor]


class DrawnBaselines(NoiseSource):
    """Wraps ``source``; each chunk also carries ``extras["baseline"]``, one row per noisy row.

    Args:
        source: the noise source of the inputs.
        baseline_rows: the drawn baselines of a range of samples, row ``i·B + b`` (the same for
            every level of a sweep).
    """

    def __init__(self, source: NoiseSource, baseline_rows: BaselineRows) -> None:
        self.source, self.baseline_rows = source, baseline_rows
        self.levels, self.batch = source.levels, source.batch
        self.rechunkable = source.rechunkable

    def chunk_size(self, start: int, wanted: int) -> int:
        return self.source.chunk_size(start, wanted)

    def draw(self, start: int, count: int) -> Chunk:
        chunk = self.source.draw(start, count)
        rows = self.baseline_rows(start, count)                  # [count·B, ...]
        example = rows.shape[1:]
        per_level = rows.view(count, 1, self.batch, *example).expand(
            count, self.levels, self.batch, *example)
        chunk.extras["baseline"] = per_level.reshape(-1, *example)
        return chunk
