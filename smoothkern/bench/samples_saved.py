"""Samples saved by a sampling design on the caller's model: how many samples each design needs
to reach the error of i.i.d. draws at m, and the time that saves.

The error of a map is its relative L2 distance to a reference map of many i.i.d. samples (the
reference's own error, estimated from its size, is removed in quadrature). Each design's error
is read at every snapshot count of one call per seed (snapshots come from the same stream, so a
snapshot k is the map of ``n_samples=k``), averaged over seeds; the samples a design needs are
the first count whose error is at most i.i.d.'s at m.

    smoothkern bench --samples-saved                      # the bundled digits CNN
    from smoothkern.bench.samples_saved import samples_saved
    report = samples_saved(model, x, n_samples=50)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..api import smooth_grad
from ..model_io import logits_of
from ..noise.sampling import SAMPLING_NAMES

# The reference holds this many times m i.i.d. samples: its own error is then a third of the
# error being measured at m (1/√8), small once removed in quadrature.
REFERENCE_FACTOR = 8


@dataclass(frozen=True)
class DesignSaving:
    """One design: the samples it needs for i.i.d.'s error at m, and the time that saves.

    Attributes:
        sampling: the design's name.
        error_at_m (float): its relative error at m (mean over seeds).
        samples_needed (int | None): the first count reaching i.i.d.'s error at m (m for
            i.i.d. itself); None if no count up to m does.
        seconds_saved (float): the time of an i.i.d. call at m minus this design's call at
            ``samples_needed`` (each timed, median of 3; 0 if none).
    """

    sampling: str
    error_at_m: float
    samples_needed: int | None
    seconds_saved: float


def samples_saved(model: nn.Module, inputs: Tensor, target: Tensor | int | None = None, *,
                  n_samples: int = 50, seeds: int = 4, designs: Sequence[str] = SAMPLING_NAMES,
                  **options) -> list[DesignSaving]:
    """For each design, the samples it needs to reach i.i.d.'s error at ``n_samples``.

    Args:
        model, inputs (Tensor[B, ...]), target: as :func:`smoothkern.smooth_grad`.
        n_samples: m, the i.i.d. count to match.
        seeds: seeds averaged per design (the error of one seed is itself noisy).
        designs: the sampling designs to compare ("iid" is the baseline and always included).
        **options: more :func:`smoothkern.smooth_grad` options (method, noise_level, ...).

    Returns:
        One :class:`DesignSaving` per design, i.i.d. first.
    """
    if "sampling" in options or "snapshots" in options:
        raise TypeError("samples_saved sets sampling= and snapshots= itself")
    designs = ("iid",) + tuple(d for d in designs if d != "iid")
    if target is None:
        with torch.no_grad():
            target = logits_of(model(inputs), None, inputs.shape[0]).argmax(1)
    reference = smooth_grad(model, inputs, target, n_samples=REFERENCE_FACTOR * n_samples,
                            seed=2**63, **options)       # a stream no compared seed uses
    counts = tuple(range(1, n_samples + 1))
    raw = {d: _mean_error(model, inputs, target, reference, d, counts, seeds, options)
           for d in designs}
    # The reference is i.i.d. at 8·m: its own squared error is i.i.d.'s at m over 8, so a
    # measured error² at m is (1 + 1/8) of the true one; remove it from every curve.
    floor_sq = raw["iid"][-1] ** 2 / (REFERENCE_FACTOR + 1)
    curves = {d: [math.sqrt(max(0.0, e * e - floor_sq)) for e in c] for d, c in raw.items()}
    goal = curves["iid"][-1]
    baseline = _seconds(model, inputs, target, "iid", n_samples, options)
    out = []
    for design in designs:
        curve = curves[design]
        needed = n_samples if design == "iid" else next(
            (k for k, e in zip(counts, curve) if e <= goal), None)
        saved = 0.0 if needed is None or design == "iid" else \
            baseline - _seconds(model, inputs, target, design, needed, options)
        out.append(DesignSaving(design, float(curve[-1]), needed, saved))
    return out


def _seconds(model: nn.Module, inputs: Tensor, target: Tensor, design: str, n_samples: int,
             options: dict, repeats: int = 3) -> float:
    """Median wall time of one call (after a warm-up): a design's draws cost differently (the
    stratified chain is dearer than i.i.d. draws on a CPU), so each is timed at its count."""
    call = lambda: smooth_grad(model, inputs, target, n_samples=n_samples,  # noqa: E731
                               sampling=design, **options)
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _mean_error(model: nn.Module, inputs: Tensor, target: Tensor, reference: Tensor,
                design: str, counts: tuple[int, ...], seeds: int, options: dict) -> list[float]:
    """The design's relative L2 error to ``reference`` at every count, averaged over seeds."""
    ref_flat = reference.flatten().double()
    ref_norm = ref_flat.norm().clamp_min(1e-30)
    total = torch.zeros(len(counts), dtype=torch.float64)
    for seed in range(seeds):
        maps = smooth_grad(model, inputs, target, n_samples=counts[-1], snapshots=counts,
                           sampling=design, seed=seed, **options)          # [P, B, ...]
        total += (maps.flatten(1).double() - ref_flat).norm(dim=1) / ref_norm
    return (total / seeds).tolist()


def format_savings(savings: list[DesignSaving], n_samples: int) -> str:
    """A table: design, error at m, samples for i.i.d.'s error at m, time saved per call."""
    lines = [f"samples each design needs for the error of i.i.d. at m = {n_samples}:",
             f"{'design':<12} {'error at m':>11} {'samples':>8} {'saved/call':>11}"]
    for s in savings:
        needed = "-" if s.samples_needed is None else str(s.samples_needed)
        lines.append(f"{s.sampling:<12} {s.error_at_m:>11.4f} {needed:>8} "
                     f"{s.seconds_saved * 1e3:>9.1f}ms")
    return "\n".join(lines)
