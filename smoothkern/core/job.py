"""One checked call of the engine: what the builder (:mod:`.builder`) makes and :func:`.engine.run`
runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..methods import AttributionMethod
from ..model_cache.cuda_graphs import GraphedPasses
from ..noise.sampling import Sampling
from ..noise.sources import Chunk, NoiseSource
from ..ops.backends import AccumulateFn, PassStrategy

# A tap sees every chunk's attributions, Tensor[count, S, B, *attr], after they are accumulated.
Tap = Callable[[Chunk, Tensor], None]


@dataclass(frozen=True)
class Job:
    """One checked call of the engine.

    Attributes:
        method: the base attribution method.
        source: draws the noisy rows (its ``levels`` S and ``batch`` B shape the results).
        target (LongTensor[B]): the output explained per example.
        n_samples: m.
        snapshots: sample counts at which results are taken, ascending, the last one m.
        aggregates: statistics to finalize ("mean", "abs", "sq", "var", "geomean").
        accumulate: the kernel set's accumulate op.
        passes: "batched", "vmap" or "loop" (the reference).
        samples_per_pass: samples per model pass (the source may fix its own chunks).
        accumulator_dtype: float32 or float64 running statistics.
        eps: floor inside the geometric mean's log.
        taps: callables that see each chunk's attributions.
        compute_dtype: None (float32 model passes) or bfloat16/float16: the method runs under
            autocast; its attributions are taken back to float32 before the statistics.
        tolerance: adaptive sample counts: after each pass, an example whose standard error
            satisfies ‖sem_b‖₂ ≤ tolerance · ‖mean_b‖₂ stops drawing and leaves later passes
            (the source and method follow it through ``subset``); None: every example draws
            ``n_samples``.
        sampling: how the source spread each element's draws over the samples; for a design
            other than i.i.d. the "sem" aggregate and ``tolerance`` use the design's standard
            error (:class:`smoothkern.noise.sampling_error.DesignError`).
        graphs: CUDA graphs of the batched passes (captured once per method and pass shape,
            replayed after; passes with per-row extras run eagerly); None: eager passes.
    """

    method: AttributionMethod
    source: NoiseSource
    target: Tensor
    n_samples: int
    snapshots: tuple[int, ...]
    aggregates: tuple[str, ...]
    accumulate: AccumulateFn
    passes: PassStrategy = PassStrategy.BATCHED
    samples_per_pass: int = 1
    accumulator_dtype: torch.dtype = torch.float32
    eps: float = 1e-10
    taps: tuple[Tap, ...] = ()
    compute_dtype: torch.dtype | None = None
    tolerance: float | None = None
    graphs: GraphedPasses | None = None
    sampling: Sampling = Sampling.IID

    def __post_init__(self) -> None:        # a name is accepted ("loop"); unknown names refused
        object.__setattr__(self, "passes", PassStrategy(self.passes))
        object.__setattr__(self, "sampling", Sampling(self.sampling))
