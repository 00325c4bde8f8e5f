"""``smooth_grad``: argument checks, planning, and the chunk loop that drives every backend."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import backends as backend_registry
from .methods import AttributionMethod, resolve_method
from .noise import check_noise_kind, check_seed, plan_sigma
from .planning import choose_samples_per_pass, forward_measuring_saved_bytes
from .state import check_eval_mode, preserved
from .stats import ACCUMULATOR_DTYPES, StreamingStats, check_aggregates, direct_statistics

DEFAULT_NOISE_LEVEL = 0.15
# How allocation failures read when they surface as plain RuntimeErrors (CPU allocator, MPS).
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


@dataclass(frozen=True)
class Plan:
    """Everything the chunk loop needs, checked and derived once.

    Attributes:
        sigma (Tensor[S, B]): noise standard deviation per level and example.
        target (LongTensor[B]): class explained per example.
        snapshots: sample counts at which results are taken, ascending, ending in m.
        returned_snapshots: how many of those the caller asked for (0: only the final one).
    """

    x: Tensor
    target: Tensor
    sigma: Tensor
    sweep: bool
    n_samples: int
    snapshots: tuple[int, ...]
    returned_snapshots: int
    aggregates: tuple[str, ...]
    single_aggregate: bool
    noise: str
    seed: int
    eps: float
    accumulator_dtype: torch.dtype
    method: AttributionMethod
    backend: backend_registry.Backend
    samples_per_pass: int | None
    row_bytes: int


def smooth_grad(
    model: nn.Module,
    inputs: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    n_samples: int = 50,
    noise_level: float | Sequence[float] | None = None,
    stdevs: float | Sequence[float] | Tensor | None = None,
    noise: str = "gaussian",
    aggregate: str | Sequence[str] = "mean",
    method: str | AttributionMethod = "gradient",
    samples_per_pass: int | None = None,
    snapshots: Sequence[int] | None = None,
    seed: int = 0,
    eps: float = 1e-10,
    backend: str | backend_registry.Backend = "auto",
    accumulator_dtype: torch.dtype = torch.float32,
    progress: bool = False,
    **method_options: Any,
) -> Tensor | dict[str, Tensor]:
    """Noise-averaged attributions (SmoothGrad and its family) in batched passes.

    Args:
        model: a classifier returning logits ``[B, classes]``; in eval mode if it has
            BatchNorm/Dropout. It comes back unchanged (flags, requires_grad, .grad, hooks).
        inputs (Tensor[B, ...]): clean inputs, floating point, finite.
        target: the class to explain: None (the class predicted for the clean input), an int,
            or a LongTensor[B]. The attribution is taken of that class's logit.
        n_samples: noise samples m per example.
        noise_level: σ_b = noise_level · (max x_b − min x_b) per example, the SmoothGrad
            paper's definition; 0.15 when neither this nor ``stdevs`` is given. A sequence is a
            sweep (result gains a leading dim S).
        stdevs: absolute σ instead: float, Tensor[B], sequence (sweep) or Tensor[S, B].
        noise: "gaussian" or "uniform" (same standard deviation, half-width √3·σ).
        aggregate: one of "mean", "abs", "sq", "var", "geomean" (returns a Tensor) or a tuple of
            them (returns a dict); all from the same samples.
        method: a name ("gradient", ...) or an :class:`AttributionMethod`; keyword options of the
            method go in ``**method_options``.
        samples_per_pass: sample indices per forward/backward (a pass holds that many · S · B
            noisy copies); None picks it from a memory budget. Results do not depend on it.
        snapshots: sample counts (each within 1..n_samples) at which the running result is also
            returned, as a leading dim before the sweep's; snapshot k equals ``n_samples=k``.
        seed: the noise stream (0 ≤ seed < 2**64); the noise is a pure function of
            (seed, example, sample, element).
        eps: floor inside the geometric mean's log(|a| + eps).
        backend: "auto", "torch", "vmap", "loop", a kernel backend ("cpp", "triton", "cuda"), or
            a :class:`smoothkern.backends.Backend` object (e.g. a custom noise source).
        accumulator_dtype: float32 (default) or float64 running statistics.
        progress: show a tqdm bar over passes.

    Returns:
        Tensor[(P,) (S,) B, *attribution_shape] in ``accumulator_dtype``, or a dict of them.
    """
    plan = make_plan(model, inputs, target, n_samples=n_samples, noise_level=noise_level,
                     stdevs=stdevs, noise=noise, aggregate=aggregate, method=method,
                     samples_per_pass=samples_per_pass, snapshots=snapshots, seed=seed, eps=eps,
                     backend=backend, accumulator_dtype=accumulator_dtype,
                     method_options=method_options)
    return run_plan(model, inputs, plan, progress)


def run_plan(model: nn.Module, inputs: Tensor, plan: Plan, progress: bool = False
             ) -> Tensor | dict[str, Tensor]:
    """Runs a :func:`make_plan` plan with the caller's state preserved; shapes the results."""
    with preserved(model, inputs), plan.method.session(model):
        if plan.backend.pass_mode == "loop":
            results = run_loop_reference(model, plan)
        else:
            results = run_chunks(model, plan, progress=progress)
    return shape_results(plan, results)


# ----------------------------------------------------------------------------------------------
# checks and planning


def _check_inputs(inputs: Tensor) -> None:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be floating point, got dtype {inputs.dtype}")
    if inputs.dim() < 1 or inputs.shape[0] < 1 or inputs.numel() == 0:
        raise ValueError(f"inputs must be [B, ...] with B >= 1 and no empty dim, got "
                         f"{tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or Inf")


def _check_target(target: Any, batch: int, classes: int, device: torch.device) -> Tensor:
    if isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints or a LongTensor, not bool")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.int64)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
        if target.dim() == 0:
            target = target.expand(batch)
        if target.dim() != 1 or target.shape[0] != batch:
            raise ValueError(f"target must be an int or have shape [{batch}], got "
                             f"{tuple(target.shape)}")
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if len(target) != batch or not all(isinstance(t, int) and not isinstance(t, bool)
                                           for t in target):
            raise ValueError(f"target must be {batch} ints, got {target!r}")
        target = torch.tensor(list(target), dtype=torch.int64)
    else:
        raise TypeError(f"target must be None, an int, a sequence of ints or a LongTensor, got "
                        f"{type(target).__name__}")
    target = target.to(device=device, dtype=torch.int64)
    if ((target < 0) | (target >= classes)).any():
        raise ValueError(f"target out of range: the model has {classes} classes, got "
                         f"{target.tolist()}")
    return target


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_snapshots(snapshots: Iterable[int] | None, n_samples: int) -> tuple[int, ...]:
    if snapshots is None:
        return (n_samples,)
    if isinstance(snapshots, int):
        snapshots = (snapshots,)
    counts = tuple(snapshots)
    if not counts:
        raise ValueError("snapshots is empty")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= n_samples:
            raise ValueError(f"snapshots must be ints within 1..n_samples={n_samples}, got "
                             f"{counts}")
    if list(counts) != sorted(set(counts)):
        raise ValueError(f"snapshots must be strictly increasing, got {counts}")
    return counts


def clean_logits(model: nn.Module, inputs: Tensor,
                 measured: tuple[Tensor, int] | None = None) -> tuple[Tensor, int]:
    """The model's output for the clean inputs, checked to be [B, classes], and the bytes
    autograd saves per row (for sizing passes); ``measured`` if given, else one forward."""
    out, row_bytes = measured or forward_measuring_saved_bytes(model, inputs)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != inputs.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits shaped [B, classes] = "
                         f"[{inputs.shape[0]}, classes], got {shape}")
    return out, row_bytes


def make_plan(model: nn.Module, inputs: Tensor, target: Any, *, n_samples: int,
              noise_level: Any, stdevs: Any, noise: str, aggregate: Any, method: Any,
              samples_per_pass: int | None, snapshots: Any, seed: int, eps: float, backend: str,
              accumulator_dtype: torch.dtype, method_options: dict[str, Any],
              clean_forward: tuple[Tensor, int] | None = None) -> Plan:
    """Checks every argument (before any work) and derives σ, targets and snapshots.

    Args:
        clean_forward: ``(logits, saved bytes per row)`` of the clean inputs when the caller
            has already run :func:`~smoothkern.planning.forward_measuring_saved_bytes` (the
            Captum drop-in does, to read the output shape); None runs it here.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_inputs(inputs)
    n_samples = _check_count(n_samples, "n_samples")
    if samples_per_pass is not None:
        samples_per_pass = _check_count(samples_per_pass, "samples_per_pass")
    noise = check_noise_kind(noise)
    names, single = check_aggregates(aggregate)
    seed = check_seed(seed)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if accumulator_dtype not in ACCUMULATOR_DTYPES:
        raise TypeError(f"accumulator_dtype must be torch.float32 or torch.float64, got "
                        f"{accumulator_dtype}")
    counts = _check_snapshots(snapshots, n_samples)
    if noise_level is None and stdevs is None:
        noise_level = DEFAULT_NOISE_LEVEL
    x = inputs.detach()
    sigma, sweep = plan_sigma(x, noise_level, stdevs)
    method_obj = resolve_method(method, **method_options)
    chosen = (backend if isinstance(backend, backend_registry.Backend)
              else backend_registry.resolve(backend, x.device))
    if chosen.pass_mode == "vmap" and not method_obj.supports_vmap:
        raise ValueError(f"method {method_obj.name!r} cannot run under backend 'vmap'; use "
                         "'auto', 'torch' or 'loop'")
    check_eval_mode(model)
    logits, row_bytes = clean_logits(model, x, clean_forward)
    target = logits.argmax(dim=1) if target is None else target
    target = _check_target(target, x.shape[0], logits.shape[1], x.device)
    extra = () if counts[-1] == n_samples else (n_samples,)
    return Plan(x=x, target=target, sigma=sigma, sweep=sweep, n_samples=n_samples,
                snapshots=counts + extra,
                returned_snapshots=len(counts) if snapshots is not None else 0, aggregates=names,
                single_aggregate=single, noise=noise, seed=seed, eps=float(eps),
                accumulator_dtype=accumulator_dtype, method=method_obj, backend=chosen,
                samples_per_pass=samples_per_pass, row_bytes=row_bytes)


# ----------------------------------------------------------------------------------------------
# running


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA OOM, or a CPU allocator failure (both surface as RuntimeError subclasses)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(err, (oom_type, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _OOM_MESSAGES)


def _attribute(model: nn.Module, plan: Plan, noisy: Tensor, rows_target: Tensor) -> Tensor:
    if plan.backend.pass_mode == "vmap":
        return plan.method.vmap_attribute(model, noisy, rows_target)
    return plan.method.attribute(model, noisy, rows_target)


def run_chunks(model: nn.Module, plan: Plan, progress: bool = False) -> list[dict[str, Tensor]]:
    """The batched engine: perturb → method → accumulate, chunk by chunk.

    Returns:
        One dict of statistics (each Tensor[S, B, *attr]) per snapshot count.
    """
    x, sigma, backend = plan.x, plan.sigma, plan.backend
    levels, batch = sigma.shape
    attr_shape = plan.method.output_shape(model, x[:1])
    state = StreamingStats.empty((levels, batch, *attr_shape), device=x.device,
                                 dtype=plan.accumulator_dtype, eps=plan.eps)
    per_pass = plan.samples_per_pass or choose_samples_per_pass(
        plan.method, x, plan.row_bytes, levels, plan.n_samples)
    bar = _progress_bar(plan.n_samples, progress)
    results, start = [], 0
    for boundary in plan.snapshots:
        while start < boundary:
            count = min(per_pass, boundary - start)
            try:
                noisy = backend.perturb(x, sigma, plan.seed, start, count, plan.noise)
                rows_target = plan.target.repeat(count * levels)
                attributions = _attribute(model, plan, noisy, rows_target)
                del noisy
            except Exception as err:  # noqa: BLE001 - only OOM is retried, the rest re-raised
                if not is_out_of_memory(err) or count == 1:
                    raise
                per_pass = max(1, count // 2)
                _release_cached_memory(x.device)
                continue
            state.update(attributions.reshape(count, levels, batch, *attr_shape),
                         accumulate=backend.accumulate)
            start += count
            if bar is not None:
                bar.update(count)
        results.append(state.finalize(plan.aggregates))
    if bar is not None:
        bar.close()
    return results


def run_loop_reference(model: nn.Module, plan: Plan) -> list[dict[str, Tensor]]:
    """The naive reference, as the assignments wrote it: one forward/backward per noise sample.

    Keeps all m attributions and computes the statistics directly in float64. The noise comes
    from the backend's ``perturb`` (for "loop", the pure-torch Philox reference).
    """
    levels, _ = plan.sigma.shape
    rows_target = plan.target.repeat(levels)
    samples = []
    for i in range(plan.n_samples):
        noisy = plan.backend.perturb(plan.x, plan.sigma, plan.seed, i, 1, plan.noise)
        samples.append(plan.method.attribute(model, noisy, rows_target))
    stacked = torch.stack(samples)                       # [m, S*B, *attr]
    stacked = stacked.reshape(plan.n_samples, levels, plan.x.shape[0], *stacked.shape[2:])
    return [{name: value.to(plan.accumulator_dtype) for name, value in
             direct_statistics(stacked[:count], plan.aggregates, plan.eps).items()}
            for count in plan.snapshots]


def shape_results(plan: Plan, results: list[dict[str, Tensor]]) -> Tensor | dict[str, Tensor]:
    """Drops the sweep dim when there is none, stacks snapshots, unwraps a single aggregate."""
    results = results[:plan.returned_snapshots] if plan.returned_snapshots else results[-1:]
    out = {}
    for name in plan.aggregates:
        values = [r[name] if plan.sweep else r[name][0] for r in results]
        out[name] = torch.stack(values) if plan.returned_snapshots else values[0]
    return out[plan.aggregates[0]] if plan.single_aggregate else out


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="samples", unit="sample", leave=False)
