"""Noise for the drop-in, as engine :class:`~smoothkern.backends.Backend` objects.

``counter_backend``: smoothkern's counter-based stream (a pure function of seed, example, sample
and element), with a σ per example *and input* (Captum's ``stdevs`` tuple).

``CaptumNoise``: exactly what ``captum.attr.NoiseTunnel`` draws after the same
``torch.manual_seed``: one ``torch.normal(0, std)`` per input per chunk of
``nt_samples_batch_size`` samples, the same shapes in the same order, rows reordered from
Captum's ``b*k + s`` to the engine's ``s*B + b``.

``CaptumSums`` taps the engine's accumulate step to keep Captum's plain sums of a and a², summed
in Captum's layout and order, so smoothgrad / smoothgrad_sq / vargrad equal Captum's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..backends import Backend
from ..noise import standard_noise
from ..stats import StreamingStats, accumulate_reference
from .inputs import Layout


def element_sigma(sigmas: Tensor, layout: Layout) -> Tensor:
    """σ per example and input (Tensor[B, K]) → per example and element (Tensor[B, N])."""
    sizes = torch.tensor(layout.sizes, device=sigmas.device)
    return torch.repeat_interleave(sigmas, sizes, dim=1)


def counter_backend(sigma: Tensor, accumulate=accumulate_reference) -> Backend:
    """The counter-based stream with σ given per element of each example.

    Args:
        sigma (Tensor[B, N]): float32 σ of every element of the joined input.
    """

    def perturb(x: Tensor, _sigma: Tensor, seed: int, start: int, count: int,
                noise: str) -> Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, -1)
        dev = x.device
        sample = torch.arange(start, start + count, dtype=torch.int64, device=dev).view(-1, 1, 1)
        example = torch.arange(batch, dtype=torch.int64, device=dev).view(1, -1, 1)
        element = torch.arange(flat.shape[1], dtype=torch.int64, device=dev).view(1, 1, -1)
        z = standard_noise(seed, example, sample, element, noise)            # [k, B, N]
        noisy = flat.float().unsqueeze(0) + sigma.unsqueeze(0) * z
        return noisy.to(x.dtype).reshape(count * batch, *x.shape[1:])

    return Backend(name="counter-per-input", perturb=perturb, accumulate=accumulate,
                   description="smoothkern's Philox stream with a σ per example and input")


def captum_chunks(nt_samples: int, batch_size: int | None) -> list[int]:
    """Samples per chunk in Captum's order: full chunks, then the remainder."""
    size = nt_samples if batch_size is None else min(nt_samples, batch_size)
    return [size] * (nt_samples // size) + ([nt_samples % size] if nt_samples % size else [])


class CaptumNoise:
    """Draws Captum's noisy inputs, chunk by chunk, for the engine.

    Args:
        inputs: the clean inputs, each Tensor[B, ...].
        stdevs: σ per input.
        layout: how the inputs join into the engine's tensor.
        chunks: samples per chunk (:func:`captum_chunks`); the engine must ask for exactly these.
    """

    def __init__(self, inputs: tuple[Tensor, ...], stdevs: Sequence[float], layout: Layout,
                 chunks: list[int]) -> None:
        self.inputs, self.stdevs, self.layout = inputs, tuple(stdevs), layout
        self.chunks = list(chunks)
        self.next_start = 0

    def perturb(self, x: Tensor, sigma: Tensor, seed: int, start: int, count: int,
                noise: str) -> Tensor:
        if not self.chunks or start != self.next_start or count != self.chunks[0]:
            raise RuntimeError(f"rng='captum' must draw Captum's chunks in order; the engine "
                               f"asked for samples {start}..{start + count - 1}")
        self.chunks.pop(0)
        self.next_start += count
        batch = self.inputs[0].shape[0]
        parts = []
        for inp, stdev in zip(self.inputs, self.stdevs):
            shape = (batch * count, *inp.shape[1:])
            # the very calls Captum's NoiseTunnel._add_noise_to_input makes
            drawn = torch.normal(0, torch.tensor(stdev, device=inp.device).repeat(shape))
            noisy = inp.repeat_interleave(count, dim=0) + drawn            # row b*k + s
            noisy = noisy.reshape(batch, count, *inp.shape[1:]).transpose(0, 1)
            parts.append(noisy.reshape(count * batch, *inp.shape[1:]))    # row s*B + b
        return self.layout.join(parts)


class CaptumSums:
    """Σ a and Σ a² per input, accumulated like Captum's NoiseTunnel.

    Args:
        batch: B.
        shapes: per-example shape of each attribution part (one part per input, or one for a
            layer attribution).
    """

    def __init__(self, batch: int, shapes: Sequence[tuple[int, ...]]) -> None:
        self.batch, self.shapes = batch, [tuple(s) for s in shapes]
        self.sums: list[Tensor | None] = [None] * len(self.shapes)
        self.squares: list[Tensor | None] = [None] * len(self.shapes)

    def add(self, chunk: Tensor) -> None:
        """chunk (Tensor[k, B·N]): k samples of every example's attribution, engine order."""
        k = chunk.shape[0]
        rows = chunk.reshape(k, self.batch, -1)
        start = 0
        for i, shape in enumerate(self.shapes):
            size = int(torch.Size(shape).numel())
            part = rows[:, :, start:start + size].transpose(0, 1)          # Captum's [B, k, ...]
            part = part.contiguous().view(self.batch, k, *shape)
            start += size
            total = part.sum(dim=1, keepdim=False)
            square = torch.sum(torch.pow(part, 2), dim=1, keepdim=False)
            self.sums[i] = total if self.sums[i] is None else self.sums[i] + total
            self.squares[i] = square if self.squares[i] is None else self.squares[i] + square

    def accumulate(self, state: StreamingStats, chunk: Tensor) -> None:
        """The engine's accumulate op: records the sums, then updates the streaming state."""
        self.add(chunk)
        accumulate_reference(state, chunk)

    def result(self, nt_type: str, nt_samples: int) -> tuple[Tensor, ...]:
        """Captum's smoothgrad, smoothgrad_sq or vargrad, one tensor per part."""
        mean = tuple(s * 1 / nt_samples for s in self.sums)
        if nt_type == "smoothgrad":
            return mean
        mean_sq = tuple(s * 1 / nt_samples for s in self.squares)
        if nt_type == "smoothgrad_sq":
            return mean_sq
        return tuple(sq - m * m for m, sq in zip(mean, mean_sq))


def captum_backend(noise: CaptumNoise, sums: CaptumSums) -> Backend:
    return Backend(name="captum-rng", perturb=noise.perturb, accumulate=sums.accumulate,
                   description="Captum's torch.normal draws and sums, reordered for the engine")
