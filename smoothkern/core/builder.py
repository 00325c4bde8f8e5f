"""The one job builder: every entry point turns its arguments into an engine job here.

An entry point (``smooth_grad``, ``noise_grad``, the Captum drop-in; the metrics, data sets and
figures call ``smooth_grad``) checks the options all of them share with :func:`check_options`
(one validator per concept, :mod:`.checks`), builds its noise source with
:meth:`Options.input_noise` and its job with :func:`build_job`, runs it with
:func:`.engine.run` inside :func:`model_session` (the model lock, the caller's state kept, the
method's hooks) and shapes the results with :func:`finish`. A new option that every entry point
should take (a sampling design, an output adapter) is added to :class:`Options` once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..model_cache.cache import model_lock
from ..noise.kinds import NoiseKind, parse_noise_kind
from ..noise.philox import check_seed
from ..noise.sampling import Sampling, parse_sampling
from ..noise.sources import CounterNoise, NoiseSource
from ..ops.backends import Backend, Choice, PassStrategy, choose
from ..ops.perturb import check_example_index
from . import engine
from .checks import (
    check_accumulator_dtype,
    check_count,
    check_eps,
    check_flag,
    check_memory_limit,
    check_snapshots,
    check_tolerance,
)
from .precision import check_compute_dtype
from .state import preserved
from .stats import check_aggregates


@dataclass(frozen=True)
class Options:
    """The checked options every entry point shares.

    Attributes:
        n_samples: samples the job draws per example (noise_grad: models × input samples).
        snapshots: the caller's snapshot counts, ascending (``(n_samples,)`` without any).
        returned_snapshots: how many snapshots the caller asked for (0: only the result).
        aggregates, single: the aggregate names, and whether one name (not a tuple) was given.
        seed, noise, sampling: the noise stream, the draw's distribution, and how each
            element's draws spread over the sample index (iid, antithetic, stratified).
        weight_sampling: the same for the weight draws over the model draws (noise_grad).
        eps, accumulator_dtype, compute_dtype, memory_limit, samples_per_pass, tolerance,
        progress: as the public functions document them.
        example_index (LongTensor[B] or None): the examples' indices in the noise stream.
        choice: the kernel set and the pass strategy.
    """

    n_samples: int
    snapshots: tuple[int, ...]
    returned_snapshots: int
    aggregates: tuple[str, ...]
    single: bool
    seed: int
    noise: NoiseKind
    sampling: Sampling
    weight_sampling: Sampling
    eps: float
    accumulator_dtype: torch.dtype
    compute_dtype: torch.dtype | None
    memory_limit: int | None
    samples_per_pass: int | None
    tolerance: float | None
    example_index: Tensor | None
    choice: Choice
    progress: bool

    @property
    def passes(self) -> PassStrategy:
        return self.choice.passes

    def input_noise(self, x: Tensor, sigma: Tensor) -> CounterNoise:
        """Counter noise on ``x`` (Tensor[B, ...]) with σ ``sigma`` ([S, B] or [S, B, N])."""
        return CounterNoise(x, sigma, self.seed, self.noise, self.choice.kernels.perturb,
                            self.example_index, sampling=self.sampling)


def check_options(inputs: Tensor, *, n_samples: int, snapshots: Any = None,
                  aggregate: str | Sequence[str] = "mean", seed: int = 0,
                  noise: str = "gaussian", sampling: str = "iid",
                  weight_sampling: str = "iid", eps: float = 1e-10,
                  backend: str | Backend = "auto",
                  accumulator_dtype: torch.dtype = torch.float32,
                  compute_dtype: torch.dtype | None = None, memory_limit: int | None = None,
                  samples_per_pass: int | None = None, tolerance: float | None = None,
                  example_index: Any = None, progress: bool = False,
                  count_name: str = "n_samples") -> Options:
    """Checks the shared options before any work; raises TypeError/ValueError with one text
    per concept.

    Args:
        inputs (Tensor[B, ...]): the checked inputs (their batch and device).
        count_name: what the caller calls ``n_samples`` (``n_models`` for noise_grad's
            snapshots).
    """
    n_samples = check_count(n_samples, count_name)
    if samples_per_pass is not None:
        samples_per_pass = check_count(samples_per_pass, "samples_per_pass")
    names, single = check_aggregates(aggregate)
    choice = choose(backend, inputs.device)
    counts = check_snapshots(snapshots, n_samples)
    return Options(
        n_samples=n_samples, snapshots=counts,
        returned_snapshots=0 if snapshots is None else len(counts),
        aggregates=names, single=single, seed=check_seed(seed), noise=parse_noise_kind(noise),
        sampling=parse_sampling(sampling),
        weight_sampling=Sampling.parse(weight_sampling, "weight_sampling"), eps=check_eps(eps),
        accumulator_dtype=check_accumulator_dtype(accumulator_dtype),
        compute_dtype=check_compute_dtype(compute_dtype),
        memory_limit=check_memory_limit(memory_limit), samples_per_pass=samples_per_pass,
        tolerance=check_tolerance(tolerance, snapshots, choice.passes),
        example_index=check_example_index(example_index, inputs.shape[0], inputs.device),
        choice=choice, progress=check_flag(progress, "progress"))


def build_job(options: Options, *, method: Any, source: NoiseSource, target: Tensor,
              samples_per_pass: int, per_snapshot: int = 1, taps: tuple = (),
              accumulator_dtype: torch.dtype | None = None,
              error_design: Sampling | None = None) -> engine.Job:
    """The engine job of a checked call.

    Args:
        method: the (wrapped) attribution method the passes run.
        source: the noise source.
        target (LongTensor[B]): the output explained per example.
        samples_per_pass: samples per model pass.
        per_snapshot: samples per counted unit (noise_grad: input samples per model draw; a
            snapshot k then ends after k · per_snapshot samples).
        taps: callables that see each chunk's attributions.
        accumulator_dtype: overrides the options' (the drop-in follows its inputs' dtype).
        error_design: the design "sem" follows over the sample index, if not the input
            noise's (noise_grad's weight draws).
    """
    total = options.n_samples * per_snapshot
    bounds = tuple(k * per_snapshot for k in options.snapshots)
    if bounds[-1] != total:
        bounds += (total,)
    return engine.Job(
        method=method, source=source, target=target, n_samples=total, snapshots=bounds,
        aggregates=options.aggregates, accumulate=options.choice.kernels.accumulate,
        passes=options.passes, samples_per_pass=samples_per_pass,
        accumulator_dtype=accumulator_dtype or options.accumulator_dtype, eps=options.eps,
        taps=taps, compute_dtype=options.compute_dtype, tolerance=options.tolerance,
        sampling=error_design or options.sampling)


@contextlib.contextmanager
def model_session(model: nn.Module, method: Any, *tensors: Tensor,
                  freeze_parameters: bool = True) -> Iterator[None]:
    """What every run holds around the model: its lock (one call at a time per model), its
    state kept (flags, requires_grad, .grad, hooks; also after an error) and the method's
    hooks."""
    with model_lock(model), preserved(model, *tensors, freeze_parameters=freeze_parameters), \
            method.session(model):
        yield


def finish(results: list[dict[str, Tensor]], options: Options, sweep: bool
           ) -> Tensor | dict[str, Tensor]:
    """Drops the sweep dim when there is none, stacks snapshots, unwraps a single aggregate."""
    return engine.shape_results(results, options.aggregates, sweep=sweep,
                                returned_snapshots=options.returned_snapshots,
                                single_aggregate=options.single)
