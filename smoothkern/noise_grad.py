"""NoiseGrad and FusionGrad: attributions averaged over noisy copies of the model's weights.

NoiseGrad (Bykov et al., 2022) explains with ``n_models`` draws of the weights,
w · (1 + weight_noise · ε); FusionGrad adds ``n_samples`` noisy inputs per draw. Here the
draws are counter-based (:mod:`smoothkern.noise.weights.draws`), the model runs on them through
functional calls (the caller's parameters are never written), several draws share a pass when
the memory budget holds them, and the n_models · n_samples attributions are reduced by the
engine's streaming statistics.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .core import engine
from .core.builder import Options, build_job, check_options, finish, model_session
from .core.checks import (
    check_count,
    check_inputs,
    check_model,
    check_target,
    check_unknown_options,
)
from .core.planning import forward_measuring_saved_bytes
from .core.state import check_eval_mode
from .methods import AttributionMethod, resolve_method
from .model_cache import clean_forward, returns_tensor, serialised
from .model_io import ModelCall, OutputSpec, adapt
from .noise.sampling import Sampling
from .noise.sigma import plan_sigma
from .noise.sources.weights import WeightNoiseSource
from .noise.weights.draws import WEIGHT_NOISE_KINDS, WeightDraws
from .noise.weights.method import OnDrawnWeights
from .noise.weights.planning import batch_draws_on, choose_attributions_per_pass
from .ops.backends import Backend

# smooth_grad keywords that have no meaning here, with the reason given when one is passed.
_NOT_HERE = {
    "tolerance": "adaptive counts would stop examples inside a model's samples",
    "prepare": "a prepared copy (BatchNorm folded) has other weights than the ones noised",
    "compile": "the model runs through functional calls on drawn weights",
}


@serialised
def noise_grad(
    model: nn.Module,
    inputs: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    n_models: int = 10,
    weight_noise: float = 0.2,
    noise_kind: str = "multiplicative",
    n_samples: int = 1,
    noise_level: float | Sequence[float] | None = 0.0,
    stdevs: float | Sequence[float] | Tensor | None = None,
    noise: str = "gaussian",
    sampling: str = "iid",
    weight_sampling: str = "iid",
    aggregate: str | Sequence[str] = "mean",
    method: str | AttributionMethod = "gradient",
    samples_per_pass: int | None = None,
    snapshots: Sequence[int] | None = None,
    seed: int = 0,
    eps: float = 1e-10,
    backend: str | Backend = "auto",
    accumulator_dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype | None = None,
    memory_limit: int | None = None,
    example_index: int | Sequence[int] | Tensor | None = None,
    output: OutputSpec = None,
    forward_args: Sequence[Any] | Any = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    **method_options: Any,
) -> Tensor | dict[str, Tensor]:
    """NoiseGrad (weight noise) and FusionGrad (weight and input noise) in batched passes.

    Every parameter element of model draw d is w · (1 + weight_noise · ε) ("multiplicative")
    or w + weight_noise · ε ("additive"), ε standard Gaussian, a pure function of (seed, d,
    parameter, element). Each draw explains ``n_samples`` inputs: the clean input when there is
    no input noise (NoiseGrad), else noisy copies drawn as ``smooth_grad`` draws them
    (FusionGrad; draw d takes input samples d·n_samples .. (d+1)·n_samples - 1, so
    ``n_models=1, weight_noise=0`` is ``smooth_grad`` with the same seed). The statistics are
    over all n_models · n_samples attributions.

    Args:
        model: a classifier returning logits ``[B, classes]``; in eval mode if it has
            BatchNorm/Dropout. Never changed: its parameters are read, the drawn weights run
            through functional calls; buffers (BatchNorm statistics) are used as they are.
        inputs (Tensor[B, ...]): clean inputs, floating point, finite.
        target: the class to explain: None (the class the unperturbed model predicts for the
            clean input), an int, or a LongTensor[B] / list of B ints.
        n_models: weight draws.
        weight_noise: the weights' noise scale, ≥ 0 (relative to each weight for
            "multiplicative", absolute for "additive"); 0 leaves the weights as they are.
        noise_kind: "multiplicative" (NoiseGrad's) or "additive".
        n_samples: input samples per weight draw (FusionGrad's m); above 1 it needs input noise.
        noise_level: input noise σ_b = noise_level · (max x_b − min x_b), as ``smooth_grad``;
            0.0: none. A sequence is a sweep (result gains a leading dim S; every level shares
            the weight draws and the input draws).
        stdevs: absolute input σ instead: float, Tensor[B], sequence (sweep) or Tensor[S, B].
        noise: the input noise, "gaussian" or "uniform" (the weight noise is Gaussian).
        sampling: how the input noise's draws spread over the samples, as in
            :func:`smoothkern.smooth_grad` ("iid", "antithetic", "stratified").
        weight_sampling: how each weight's draws spread over the model draws: "iid" (the
            draws of before, bit for bit), "antithetic" (draw 2k+1 negates draw 2k's ε) or
            "stratified" (draws 0 .. 2**k - 1 of every weight hold each of 2**k strata of its
            Gaussian once). The designs lower the error of the mean map at equal n_models
            (docs/sampling.md); VarGrad ("var") gains nothing and can lose. With a design
            other than "iid", "sem" is the design's error over the draws and needs
            ``n_samples=1``.
        aggregate: "mean" (NoiseGrad/FusionGrad), "abs", "sq", "var", "geomean", "sem",
            "count" (LongTensor[B], n_models · n_samples), or a tuple of them (returns a dict).
        method: "gradient", "saliency", "input_x_gradient", "integrated_gradients",
            "guided_backprop", "grad_cam", "guided_grad_cam" or an :class:`AttributionMethod`;
            its options as keywords (``n_steps=20``, ``layer="layer4"``).
        samples_per_pass: attributions per example in one pass (draws × input samples; a
            multiple of ``n_samples`` batches whole draws); None: from the memory budget.
            Results do not depend on it.
        snapshots: model counts (each within 1..n_models) at which the running result is also
            returned, as a leading dim; snapshot k equals a run with ``n_models=k``.
        seed: the noise streams, 0 ≤ seed < 2**64 (inputs: the seed; weights: another key made
            from it).
        eps: floor inside the geometric mean's log(|a| + eps).
        backend: "auto", a kernel set ("torch", "cpp", "triton", "cuda"; they draw the input and
            weight noise) or "loop" (one attribution per pass, statistics from all of them in
            float64: the reference).
        accumulator_dtype: float32 (default) or float64 running statistics.
        compute_dtype: None, torch.bfloat16 or torch.float16: the passes run under autocast.
        memory_limit: bytes one pass may hold: saved activations plus the drawn weights.
        example_index: the examples' indices in the caller's data, keying the input noise (as in
            ``smooth_grad``); the weight draws are shared by all examples.
        output, forward_args, forward_kwargs: where the logits are in the model's output, and
            the model's other inputs, as in :func:`smoothkern.smooth_grad`.
        progress: show a tqdm bar over attributions.

    Returns:
        Tensor[(P,) (S,) B, *attribution_shape] in ``accumulator_dtype``, or a dict of them
        ("count": LongTensor[(P,) B]).

    Raises:
        ValueError / TypeError: bad arguments, before any pass; the caller's model comes back
            unchanged (parameters, flags, hooks, .grad) also after an error.
    """
    for name, reason in _NOT_HERE.items():
        if name in method_options:
            raise TypeError(f"noise_grad takes no {name}=: {reason}")
    check_model(model)
    check_inputs(inputs)
    check_unknown_options(method_options, _KEYWORDS, method, "noise_grad")
    if backend == "vmap":
        raise ValueError("backend 'vmap' (vmap over rows) is not offered by noise_grad: its "
                         "batched passes already vmap over the model draws; use 'auto', a "
                         "kernel set or 'loop'")
    n_samples = check_count(n_samples, "n_samples")
    options = check_options(
        inputs, n_samples=n_models, snapshots=snapshots, aggregate=aggregate, seed=seed,
        noise=noise, sampling=sampling, weight_sampling=weight_sampling, eps=eps,
        backend=backend,
        accumulator_dtype=accumulator_dtype,
        compute_dtype=compute_dtype, memory_limit=memory_limit,
        samples_per_pass=samples_per_pass, example_index=example_index, progress=progress,
        count_name="n_models")
    weight_noise = check_weight_noise(weight_noise)
    if noise_kind not in WEIGHT_NOISE_KINDS:
        raise ValueError(f"unknown noise_kind {noise_kind!r}; choose one of {WEIGHT_NOISE_KINDS}")
    x = inputs.detach()
    if stdevs is not None and isinstance(noise_level, (int, float)) and noise_level == 0:
        noise_level = None                    # the default gives way to stdevs
    sigma, sweep = plan_sigma(x, noise_level, stdevs)
    if n_samples > 1 and not bool((sigma > 0).any()):
        raise ValueError(f"n_samples={n_samples} without input noise would repeat each model's "
                         "attribution; give noise_level or stdevs (FusionGrad), or n_samples=1")
    method_obj = resolve_method(method, **method_options)
    check_eval_mode(model)
    call = adapt(model, output, forward_args, forward_kwargs, x.shape[0])
    error_design = _error_design(options, n_samples)
    draws = WeightDraws(call, weight_noise, noise_kind, seed, options.choice.kernels.perturb,
                        sampling=options.weight_sampling, total=options.n_samples)
    _check_devices(draws, x.device)
    wrapped = OnDrawnWeights(method_obj, call, draws)
    with model_session(model, wrapped, inputs):
        if call is model:
            logits, row_bytes = clean_forward(model, x)
            if not returns_tensor(model, x):     # a ModelOutput or a mapping: adapt it
                call = ModelCall(model, batch=x.shape[0])
                wrapped = OnDrawnWeights(method_obj, call, draws)
        else:
            logits, row_bytes = forward_measuring_saved_bytes(call, x)
        target = check_target(logits.argmax(dim=1) if target is None else target, x.shape[0],
                              logits.shape[1], x.device)
        rows_per_attribution = sigma.shape[0] * x.shape[0] * max(1, method_obj.rows_per_sample)
        per_pass = options.samples_per_pass or choose_attributions_per_pass(
            rows_per_attribution, n_models, n_samples, row_bytes, draws.bytes_per_draw,
            x.device, options.memory_limit,
            batch_models=wrapped.vmap_draws and batch_draws_on(x.device))
        job = build_job(options, method=wrapped,
                        source=WeightNoiseSource(options.input_noise(x, sigma), n_samples),
                        target=target, samples_per_pass=per_pass, per_snapshot=n_samples,
                        error_design=error_design)
        try:
            results = engine.run(call, job, options.progress)
        finally:
            draws.release()
    return finish(results, options, sweep)


# the keywords noise_grad takes itself (the rest go to the method)
_KEYWORDS = tuple(p for p in inspect.signature(noise_grad).parameters
                  if p not in ("model", "inputs", "method_options"))


def check_weight_noise(value: Any) -> float:
    """A finite, non-negative noise scale."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"weight_noise must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"weight_noise must be finite and >= 0, got {value!r}")
    return float(value)


def _error_design(options: Options, n_samples: int) -> Sampling:
    """The design "sem" reads over the engine's sample index t = d·n_samples + i: the weight
    draws' when not i.i.d. (then t = d: one attribution per draw), else the input noise's.

    Raises:
        ValueError: "sem" under a non-i.i.d. weight design with several input samples per draw
            (a draw's samples share its weights; that error is not implemented).
    """
    if options.weight_sampling is Sampling.IID:
        return options.sampling
    if n_samples == 1:
        return options.weight_sampling
    if "sem" in options.aggregates:
        raise ValueError(f"aggregate 'sem' with weight_sampling={options.weight_sampling.value!r}"
                         f" needs n_samples=1 (got {n_samples}): the design's error is over the "
                         "model draws; use weight_sampling='iid' or leave out 'sem'")
    return options.sampling          # not read: no "sem", and noise_grad takes no tolerance


def _check_devices(draws: WeightDraws, device: torch.device) -> None:
    for p in draws.parameters:
        if p.value.device != device:
            raise ValueError(f"parameter {p.name!r} is on {p.value.device}, the inputs on "
                             f"{device}: move the model and the inputs to one device")


__all__ = ["noise_grad"]
