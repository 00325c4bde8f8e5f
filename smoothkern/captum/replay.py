"""``rng="captum"``: a noise source that replays Captum's draws, and a tap that sums like Captum.

:class:`CaptumReplay` draws exactly what ``captum.attr.NoiseTunnel`` draws after the same
``torch.manual_seed``: one ``torch.normal(0, std)`` per input per chunk of
``nt_samples_batch_size`` samples, the same shapes in the same order, rows reordered from
Captum's ``b*k + s`` to the engine's ``s*B + b``. Its chunks are fixed (it is not rechunkable);
after an out-of-memory error the engine splits a drawn chunk instead of drawing again.

:class:`CaptumSums` taps the engine's chunks to keep Captum's plain sums of a and a², summed in
Captum's layout and order, so smoothgrad / smoothgrad_sq / vargrad equal Captum's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..noise.sources import Chunk, NoiseSource
from .arguments import Layout


def captum_chunks(nt_samples: int, batch_size: int | None) -> list[int]:
    """Samples per chunk in Captum's order: full chunks, then the remainder."""
    size = nt_samples if batch_size is None else min(nt_samples, batch_size)
    return [size] * (nt_samples // size) + ([nt_samples % size] if nt_samples % size else [])


class CaptumReplay(NoiseSource):
    """Captum's noisy inputs, chunk by chunk.

    Args:
        inputs: the clean inputs, each Tensor[B, ...].
        stdevs: σ per input.
        layout: how the inputs join into the engine's tensor.
        chunks: samples per chunk (:func:`captum_chunks`), drawn in this order.
    """

    rechunkable = False

    def __init__(self, inputs: tuple[Tensor, ...], stdevs: Sequence[float], layout: Layout,
                 chunks: list[int]) -> None:
        self.inputs, self.stdevs, self.layout = inputs, tuple(stdevs), layout
        self.levels, self.batch = 1, inputs[0].shape[0]
        self.starts = {sum(chunks[:i]): c for i, c in enumerate(chunks)}
        self.next_start = 0

    def chunk_size(self, start: int, wanted: int) -> int:
        return self.starts[start]

    def draw(self, start: int, count: int) -> Chunk:
        if start != self.next_start or self.starts.get(start) != count:
            raise RuntimeError(f"rng='captum' replays Captum's chunks in order; the engine asked "
                               f"for samples {start}..{start + count - 1}")
        self.next_start += count
        parts = []
        for inp, stdev in zip(self.inputs, self.stdevs):
            shape = (self.batch * count, *inp.shape[1:])
            # the very calls Captum's NoiseTunnel._add_noise_to_input makes
            drawn = torch.normal(0, torch.tensor(stdev, device=inp.device).repeat(shape))
            noisy = inp.detach().repeat_interleave(count, dim=0) + drawn     # row b*k + s
            noisy = noisy.reshape(self.batch, count, *inp.shape[1:]).transpose(0, 1)
            parts.append(noisy.reshape(count * self.batch, *inp.shape[1:]))  # row s*B + b
        return Chunk(start, count, self.layout.join(parts))


class CaptumSums:
    """Σ a and Σ a² per attribution part, accumulated like Captum's NoiseTunnel (a tap).

    Args:
        batch: B.
        shapes: the per-example shape of each part (one part per input, a layer's map, or a
            generic algorithm's outputs), or a callable giving them once the first chunk ran.
    """

    def __init__(self, batch: int,
                 shapes: Sequence[tuple[int, ...]] | Callable[[], Sequence[tuple[int, ...]]]
                 ) -> None:
        self.batch, self._shapes = batch, shapes
        self.sums: list[Tensor] = []
        self.squares: list[Tensor] = []

    def __call__(self, chunk: Chunk, attributions: Tensor) -> None:
        """attributions (Tensor[k, 1, B, ...]): k samples of every example, engine order."""
        shapes = self._shapes() if callable(self._shapes) else self._shapes
        k = attributions.shape[0]
        rows = attributions.reshape(k, self.batch, -1)
        start = 0
        for i, shape in enumerate(shapes):
            size = int(torch.Size(shape).numel())
            part = rows[:, :, start:start + size].transpose(0, 1)          # Captum's [B, k, ...]
            part = part.contiguous().view(self.batch, k, *shape)
            start += size
            total = part.sum(dim=1, keepdim=False)
            square = torch.sum(torch.pow(part, 2), dim=1, keepdim=False)
            if i == len(self.sums):
                self.sums.append(total)
                self.squares.append(square)
            else:
                self.sums[i] = self.sums[i] + total
                self.squares[i] = self.squares[i] + square

    def result(self, nt_type: str, nt_samples: int) -> tuple[Tensor, ...]:
        """Captum's smoothgrad, smoothgrad_sq or vargrad, one tensor per part."""
        mean = tuple(s * 1 / nt_samples for s in self.sums)
        if nt_type == "smoothgrad":
            return mean
        mean_sq = tuple(s * 1 / nt_samples for s in self.squares)
        if nt_type == "smoothgrad_sq":
            return mean_sq
        return tuple(sq - m * m for m, sq in zip(mean, mean_sq))
