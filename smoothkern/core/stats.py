"""Streaming statistics of attributions: mergeable float32 (or float64) accumulators.

State per element (all of shape ``[N]``, the attribution flattened):

    count   number of samples seen (a Python int, the same for every element)
    mean    Welford running mean
    m2      Σ (a - mean)²   (Chan/Welford, so the variance never goes negative)
    abs_sum Σ |a|
    log_sum Σ log(|a| + eps)

``finalize`` turns the state into any subset of

    mean    = mean                      SmoothGrad
    abs     = abs_sum / count
    sq      = m2 / count + mean²        SmoothGrad², Captum's smoothgrad_sq
    var     = m2 / count                VarGrad (population variance, like Captum)
    geomean = exp(log_sum / count)
    sem     = sqrt(m2 / (count - 1) / count)   standard error of the mean (NaN for one sample)

``"count"`` (the samples each example used, Tensor[B]) is a valid aggregate name for the engine,
not an element-wise statistic: ``finalize`` refuses it.

NaN and ±Inf attributions (one rule on every backend, and in :func:`direct_statistics`)
----------------------------------------------------------------------------------------------
For an element whose samples hold a NaN, every statistic is NaN. For an element whose samples
hold ±Inf but no NaN, the statistics are the values the direct formulas give, except the mean:

    mean = NaN, abs = +Inf, sq = +Inf, var = NaN, geomean = +Inf, sem = NaN

(the direct mean would be ±Inf when all infinite samples share a sign, but a running mean cannot
carry an infinity: Welford's update computes Inf - Inf). ``finalize`` applies the rule from
``abs_sum``, which is NaN exactly when a NaN was seen and +Inf when an infinity was, so it holds
for the torch, C++, Triton and CUDA accumulators alike, through ``merge`` too; the other elements
are unaffected. (Finite attributions whose Σ|a| overflows the accumulator dtype, beyond 3e38 in
float32, get mean NaN, sq +Inf and var NaN too.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops.accumulate import accumulate_reference

AGGREGATES = ("mean", "abs", "sq", "var", "geomean", "sem")
# aggregate names the engine answers beside the element-wise statistics
PER_EXAMPLE_AGGREGATES = ("count",)
ACCUMULATOR_DTYPES = (torch.float32, torch.float64)


def check_aggregates(aggregate: str | Iterable[str]) -> tuple[tuple[str, ...], bool]:
    """Validates ``aggregate``; returns the names and whether a single name was given."""
    if isinstance(aggregate, str):
        names, single = (aggregate,), True
    else:
        try:
            names, single = tuple(aggregate), False
        except TypeError:
            raise TypeError(f"aggregate must be a name or a tuple of names, got "
                            f"{type(aggregate).__name__}") from None
        if not names:
            raise ValueError("aggregate is empty; choose from " + ", ".join(AGGREGATES))
    for name in names:
        if name not in AGGREGATES + PER_EXAMPLE_AGGREGATES:
            raise ValueError(f"unknown aggregate {name!r}; choose from "
                             f"{AGGREGATES + PER_EXAMPLE_AGGREGATES}")
    if len(set(names)) != len(names):
        raise ValueError(f"aggregate names repeat: {names}")
    return names, single


@dataclass
class StreamingStats:
    """Running mean / |mean| / mean of squares / variance / geometric mean of attributions.

    Mergeable: ``a.merge(b)`` equals one accumulator that saw both streams (Chan et al.), so
    chunks, devices or dataset shards combine exactly.

    Non-finite attributions: an element that saw a NaN finalizes to NaN in every statistic; one
    that saw ±Inf (and no NaN) to mean NaN, abs +Inf, sq +Inf, var NaN, geomean +Inf, on every
    backend (see the module docstring).

    Example:
        >>> s = StreamingStats.empty(10)
        >>> s.update(torch.randn(5, 10)); s.update(torch.randn(3, 10))
        >>> out = s.finalize(("mean", "var"))

    Args:
        mean, m2, abs_sum, log_sum (Tensor[...]): state, shaped like one attribution.
        count: samples seen so far.
        eps: floor inside the geometric mean's log.
    """

    mean: Tensor
    m2: Tensor
    abs_sum: Tensor
    log_sum: Tensor
    count: int = 0
    eps: float = 1e-10

    @classmethod
    def empty(cls, shape: int | tuple[int, ...], *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32, eps: float = 1e-10) -> StreamingStats:
        """A state that has seen no sample, ``shape`` being one attribution's shape."""
        if dtype not in ACCUMULATOR_DTYPES:
            raise TypeError(f"accumulator dtype must be float32 or float64, got {dtype}")
        if not (eps > 0 and eps == eps and eps != float("inf")):
            raise ValueError(f"eps must be a positive finite number, got {eps}")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)

        def zeros() -> Tensor:
            return torch.zeros(shape, device=device, dtype=dtype)

        return cls(zeros(), zeros(), zeros(), zeros(), 0, float(eps))

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    def update(self, chunk: Tensor, accumulate=None) -> StreamingStats:
        """Adds k attributions.

        Args:
            chunk (Tensor[k, *shape]): attributions (fp32/fp16/bf16/fp64).
            accumulate: the backend's fused ``accumulate(state, chunk[k, N])``; the torch
                reference when None.
        """
        if chunk.dim() < 1 or tuple(chunk.shape[1:]) != tuple(self.shape):
            raise ValueError(f"chunk must be [k, {', '.join(map(str, self.shape))}], "
                             f"got {tuple(chunk.shape)}")
        if not chunk.is_floating_point():
            raise TypeError(f"attributions must be floating point, got {chunk.dtype}")
        if chunk.shape[0] == 0:
            return self
        flat_state = self.flat()
        (accumulate or accumulate_reference)(flat_state, chunk.reshape(chunk.shape[0], -1))
        self.count = flat_state.count
        return self

    def flat(self) -> StreamingStats:
        """A view of this state with element shape ``[N]`` (shares storage)."""
        return StreamingStats(self.mean.view(-1), self.m2.view(-1), self.abs_sum.view(-1),
                              self.log_sum.view(-1), self.count, self.eps)

    def _merge_moments(self, n_b: int, mean_b: Tensor, m2_b: Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b + delta.square() * (n_a * n_b / n)
        self.count = n

    def merge(self, other: StreamingStats) -> StreamingStats:
        """Adds another accumulator's samples to this one, in place; returns self."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge states of shapes {tuple(self.shape)} and "
                             f"{tuple(other.shape)}")
        if other.eps != self.eps:
            raise ValueError(f"cannot merge states with different eps ({self.eps} vs {other.eps})")
        if other.count == 0:
            return self
        self.abs_sum += other.abs_sum.to(self.dtype)
        self.log_sum += other.log_sum.to(self.dtype)
        self._merge_moments(other.count, other.mean.to(self.dtype), other.m2.to(self.dtype))
        return self

    def finalize(self, aggregates: str | Iterable[str] = AGGREGATES) -> dict[str, Tensor]:
        """The requested statistics, each shaped like one attribution, in the state's dtype."""
        names, _ = check_aggregates(aggregates)
        if self.count == 0:
            raise ValueError("no samples have been accumulated")
        for name in names:
            if name in PER_EXAMPLE_AGGREGATES:
                raise ValueError(f"{name!r} is not an element-wise statistic: the engine "
                                 "answers it")
        # abs_sum is NaN where a NaN was seen and +Inf where an infinity was (module docstring).
        nan_seen = self.abs_sum.isnan()
        view = _Finite(self, nan_seen, nan_seen | self.abs_sum.isinf(),
                       torch.tensor(float("nan"), dtype=self.dtype, device=self.mean.device))
        return {name: FINALIZERS[name].streaming(view) for name in names}


@dataclass(frozen=True)
class _Finite:
    """A state as the streaming finalizers read it: where a NaN (``nan_seen``) or any
    non-finite value (``bad``) was accumulated, and a NaN scalar of the state's dtype."""

    state: StreamingStats
    nan_seen: Tensor
    bad: Tensor
    nan: Tensor


def _stream_sem(v: _Finite) -> Tensor:
    s, n = v.state, v.state.count
    if n < 2:
        return torch.full_like(s.mean, float("nan"))
    return torch.where(v.bad, v.nan, (s.m2 / (n - 1) / n).clamp_min(0).sqrt())


def _direct_mean(a: Tensor, eps: float) -> Tensor:
    return torch.where(a.isinf().any(0), float("nan"), a.mean(0))


def _direct_sem(a: Tensor, eps: float) -> Tensor:
    if a.shape[0] < 2:
        return torch.full_like(a[0], float("nan"))
    return torch.where(a.isinf().any(0), float("nan"), a.std(0, unbiased=True) / a.shape[0] ** 0.5)


@dataclass(frozen=True)
class Finalizer:
    """One aggregate: from a streaming state (``streaming``) and from all samples held at once
    (``direct``, float64, the loop reference's way)."""

    streaming: Callable[[_Finite], Tensor]
    direct: Callable[[Tensor, float], Tensor]


# Every element-wise aggregate, in one table: adding one is an entry here (and its name in
# AGGREGATES); an unknown name is an error in check_aggregates, never a default.
FINALIZERS: dict[str, Finalizer] = {
    "mean": Finalizer(lambda v: torch.where(v.bad, v.nan, v.state.mean), _direct_mean),
    "abs": Finalizer(lambda v: v.state.abs_sum / v.state.count,
                     lambda a, eps: a.abs().mean(0)),
    "sq": Finalizer(lambda v: torch.where(v.bad, v.state.abs_sum,
                                          (v.state.m2 / v.state.count).clamp_min(0)
                                          + v.state.mean.square()),
                    lambda a, eps: a.square().mean(0)),
    "var": Finalizer(lambda v: torch.where(v.bad, v.nan, (v.state.m2 / v.state.count)
                                           .clamp_min(0)),
                     lambda a, eps: a.var(0, unbiased=False)),
    "geomean": Finalizer(lambda v: torch.where(v.nan_seen, v.nan,
                                               torch.exp(v.state.log_sum / v.state.count)),
                         lambda a, eps: torch.exp(torch.log(a.abs() + eps).mean(0))),
    "sem": Finalizer(_stream_sem, _direct_sem),
}
assert tuple(FINALIZERS) == AGGREGATES, "AGGREGATES and FINALIZERS name the same aggregates"


def direct_statistics(samples: Tensor, aggregates: Iterable[str], eps: float) -> dict[str, Tensor]:
    """Statistics of all m samples held at once, the plain way (used by the loop reference).

    Follows the accumulators' rule for non-finite samples (module docstring): the plain
    formulas give it, except the mean of an element with an infinite sample, set to NaN.

    Args:
        samples (Tensor[m, ...]): every attribution.
        aggregates: names from :data:`AGGREGATES`.
        eps: floor inside the geometric mean's log.

    Returns:
        ``{name: Tensor[...]}`` in float64.
    """
    a = samples.to(torch.float64)
    return {name: FINALIZERS[name].direct(a, eps) for name in aggregates}
