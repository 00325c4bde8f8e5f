"""``NoiseTunnel``: Captum's interface, smoothkern's batched engine underneath."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import captum.attr as _captum
import torch
from captum.log import log_usage
from torch import Tensor, nn

from ..core import engine
from ..core.builder import Options, build_job, check_options, model_session
from ..core.checks import check_strategy
from ..core.plan import planned_samples_per_pass
from ..core.planning import forward_measuring_saved_bytes
from ..model_cache import (
    check_preparations,
    clean_forward,
    model_lock,
    prepared_model,
    usable_preparations,
)
from ..noise.layer import check_layer_strategy
from ..noise.sources import DrawnBaselines, NoiseSource
from ..ops.backends import PassStrategy
from .arguments import format_stdevs, format_target
from .attributions import Problem, build_problem, input_shaped, native_method, native_name
from .baseline_draws import BaselineDraws
from .errors import CaptumArgumentError
from .generic import CaptumAlgorithm
from .layer_noise import LayerNoiseRun
from .replay import CaptumReplay, CaptumSums, captum_chunks

CAPTUM_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
# nt_type → smoothkern aggregate; "abs" and "geomean" are smoothkern's extras
AGGREGATE_OF = {"smoothgrad": "mean", "smoothgrad_sq": "sq", "vargrad": "var", "abs": "abs",
                "geomean": "geomean"}
RNG_MODES = ("smoothkern", "captum")
# options that describe the call rather than configure the algorithm
_CALL_OPTIONS = ("target", "additional_forward_args")


class NoiseTunnel(_captum.NoiseTunnel):
    """Captum's ``NoiseTunnel(attribution_method)``, batched by smoothkern's engine.

    Takes every Captum attribution. Saliency, InputXGradient, IntegratedGradients,
    GuidedBackprop, LayerGradCam and GuidedGradCam (Captum's or smoothkern.captum's) run as
    smoothkern methods, noise samples and integration steps in the same batched passes; every
    other algorithm (DeepLift, GradientShap, FeatureAblation, LRP, the layer and neuron
    attributions, ...) runs its own ``attribute`` once per chunk of noisy copies. Either way the
    noise comes from the engine's noise source and the results from its streaming statistics.

    Args:
        attribution_method: a ``captum.attr`` attribution object.
    """

    def __init__(self, attribution_method: Any) -> None:
        if not isinstance(attribution_method, _captum.Attribution):
            raise TypeError(f"NoiseTunnel takes a captum.attr attribution object, got "
                            f"{type(attribution_method).__module__}."
                            f"{type(attribution_method).__name__}")
        super().__init__(attribution_method)

    def _attribute(self, inputs: Tensor | tuple[Tensor, ...],
                  nt_type: str | Sequence[str] = "smoothgrad", nt_samples: int = 5,
                  nt_samples_batch_size: int | None = None,
                  stdevs: float | tuple[float, ...] | None = None,
                  draw_baseline_from_distrib: bool = False, *, noise: str = "gaussian",
                  sampling: str = "iid",
                  noise_level: float | tuple[float, ...] | None = None, seed: int | None = None,
                  backend: str = "auto", rng: str = "captum",
                  compute_dtype: torch.dtype | None = None, prepare: bool | Sequence[str] = True,
                  noise_at: nn.Module | str | None = None, example_index: Any = None,
                  **kwargs: Any) -> Any:
        """Noise-averaged attributions, Captum's arguments and output structure.

        Args:
            inputs: Tensor[B, ...] or a tuple of them (examples aligned on dim 0), floating point
                (with ``noise_at``: whatever the model takes, integer token ids too).
            nt_type: "smoothgrad", "smoothgrad_sq", "vargrad", or smoothkern's "abs" (mean of
                |a|) and "geomean"; a tuple of them returns a dict keyed by nt_type.
            nt_samples: noise samples per example.
            nt_samples_batch_size: samples per chunk. With rng="captum" Captum's chunking (and
                memory); otherwise None lets smoothkern choose, and results do not depend on it.
            stdevs: σ of the Gaussian noise, one float or one per input (default 1.0, as
                Captum's); not together with ``noise_level``.
            draw_baseline_from_distrib: give each noisy row a baseline drawn at random from the
                rows of ``baselines`` (Tensor[M, ...] per input, any M), like Captum; with the
                default rng the draws come from the counter-based stream (``seed``), with
                rng="captum" from numpy's global generator exactly as Captum draws them.
            noise: "gaussian" or "uniform" (same σ). Not with rng="captum".
            sampling: how each element's draws spread over the samples, as in
                ``smooth_grad``: "iid" (the default here, as Captum draws), "antithetic" or
                "stratified". Not with rng="captum".
            noise_level: σ relative to each example's range (max - min) per input, instead of
                ``stdevs``; a float or one per input. Not with rng="captum".
            seed: the counter-based stream's seed (default 0). With rng="captum" the noise comes
                from torch's global generator: seed it with ``torch.manual_seed``.
            backend: smoothkern backend name ("auto", "torch", "cpp", "loop", ...); one that
                cannot run here is refused, never replaced.
            rng: "smoothkern" (the default of ``attribute``: reproducible counter-based noise,
                chunk invariant) or "captum" (Captum's exact draws: equal to
                ``captum.attr.NoiseTunnel`` after the same seed). Captum's own algorithms that
                build a NoiseTunnel inside (GradientShap, LayerGradientShap, NeuronGradientShap)
                call ``attribute.__wrapped__``, whose default is "captum": their results stay
                Captum's, random stream included.
            compute_dtype: None, torch.bfloat16 or torch.float16: the attribution passes run
                under autocast in that dtype; noise and statistics stay float32 (with
                rng="captum" the draws are still Captum's, the sums no longer bit-equal).
            prepare: with the default rng, the native methods run a prepared copy of the model
                (BatchNorm folded; see ``smooth_grad``'s ``prepare``); False runs the model as
                given. rng="captum" never prepares (Captum's arithmetic, bit for bit).
            noise_at: add the noise to this layer's output instead of the inputs (the module,
                or its dotted path in the model) and attribute with respect to that output; the
                wrapped algorithm must be ``LayerIntegratedGradients`` or
                ``LayerGradientXActivation`` of that layer (IG runs from the activation of
                ``baselines`` to the noisy activation). ``stdevs`` (one number) is σ at the
                layer, ``noise_level`` relative to each example's activation range. Only with
                the default rng (Captum has no counterpart to replay).
            example_index: which examples of the caller's data the rows are, for the counter
                noise (an int offset, a list or a LongTensor[B]; as in ``smooth_grad``): example
                k then draws the same noise in any batch. Only with the default rng.
            **kwargs: the attribution method's ``attribute`` arguments: ``target``,
                ``additional_forward_args``, ``baselines``, ``n_steps``, ``feature_mask``,
                ``return_convergence_delta``, ...

        Returns:
            Like Captum: attributions (Tensor or tuple), or ``(attributions, delta)`` with
            ``return_convergence_delta=True`` (delta: Tensor[B * nt_samples], example-major).
        """
        types, single = _check_types(nt_type)
        nt_samples, batch_size = _check_samples(nt_samples, nt_samples_batch_size)
        if rng not in RNG_MODES:
            raise CaptumArgumentError(f"rng must be one of {RNG_MODES}, got {rng!r}")
        if rng == "captum":
            _check_captum_mode(noise, noise_level, seed, backend)
            if sampling != "iid":
                raise CaptumArgumentError("sampling= spreads the counter noise; rng='captum' "
                                          "draws Captum's: use the default rng='smoothkern'")
            if noise_at is not None:
                raise CaptumArgumentError("noise_at= has no Captum counterpart to replay: use "
                                          "the default rng='smoothkern'")
            if example_index is not None:
                raise CaptumArgumentError("example_index= keys the counter noise; rng='captum' "
                                          "draws Captum's: use the default rng='smoothkern'")
        if noise_at is not None and draw_baseline_from_distrib:
            raise CaptumArgumentError("draw_baseline_from_distrib is not available with "
                                      "noise_at=")
        if stdevs is not None and noise_level is not None:
            raise CaptumArgumentError("give either stdevs (absolute) or noise_level (relative "
                                      "to each example's range), not both")
        stdevs = 1.0 if stdevs is None else stdevs
        options = dict(kwargs)
        want_delta = bool(options.pop("return_convergence_delta", False))
        if want_delta and not self.is_delta_supported:
            raise CaptumArgumentError(f"{type(self.attribution_method).__name__} has no "
                                      "convergence delta")
        drawn = options.pop("baselines", None) if (
            draw_baseline_from_distrib and "baselines" in options) else None
        algorithm = self.attribution_method
        problem = build_problem(algorithm.forward_func, inputs,
                                options.get("additional_forward_args"),
                                integer_ok=noise_at is not None,
                                reuse=getattr(self, "_flat_model", None))
        self._flat_model = problem.model     # one wrapper: its prepared copy stays cached
        checked = check_options(
            problem.x, n_samples=nt_samples, aggregate=tuple(dict.fromkeys(
                AGGREGATE_OF[t] for t in types)), seed=0 if seed is None else seed,
            noise=noise, sampling=sampling, backend=backend, compute_dtype=compute_dtype,
            example_index=example_index)
        choice = checked.choice
        if noise_at is not None:
            return self._attribute_at_layer(problem, noise_at, options, want_delta, types,
                                            single, batch_size, stdevs, noise_level, checked)
        sds = format_stdevs(stdevs, len(problem.inputs))
        name = native_name(algorithm, {k: v for k, v in options.items()
                                       if k not in _CALL_OPTIONS})
        # Captum's replay keeps Captum's arithmetic too: no prepared copy, Captum's IG steps
        preparations = check_preparations(prepare)       # checked in both modes
        if rng == "captum":
            preparations = ()
        run = _NativeRun(name, algorithm, problem, options, want_delta, rng == "smoothkern",
                         preparations) if name else \
            _GenericRun(algorithm, problem, options, want_delta)
        check_strategy(choice.passes, run.method)

        if rng == "captum":
            if choice.passes is not PassStrategy.BATCHED:
                raise CaptumArgumentError("rng='captum' replays Captum's chunks in batched "
                                          "passes; backend 'loop' and 'vmap' are not available")
            chunks = captum_chunks(nt_samples, batch_size)
            source: NoiseSource = CaptumReplay(problem.inputs, sds, problem.layout, chunks)
            sums = CaptumSums(problem.x.shape[0], run.part_shapes)
            taps: tuple = (sums,)
        else:
            chunks, sums, taps = None, None, ()
            source = checked.input_noise(problem.x, _sigma(problem, sds, noise_level))
        if drawn is not None:
            draws = BaselineDraws(drawn, problem.inputs, problem.layout, checked.seed, chunks)
            source = DrawnBaselines(source, draws.rows)

        per_pass = batch_size or (chunks[0] if chunks else run.samples_per_pass(checked))
        aggregates = tuple(dict.fromkeys(AGGREGATE_OF[t] for t in types
                                         if rng == "smoothkern" or t not in CAPTUM_TYPES)
                           ) or ("mean",)
        job = build_job(dataclasses.replace(checked, aggregates=aggregates), method=run.method,
                        source=source, target=run.target, samples_per_pass=per_pass, taps=taps,
                        accumulator_dtype=_accumulator_dtype(problem.x.dtype))
        with model_session(problem.model, run.method, problem.x,
                           freeze_parameters=run.native):
            (stats,) = engine.run(run.runner(choice.passes), job)
        out = {}
        for t in types:
            if sums is not None and t in CAPTUM_TYPES:
                parts = sums.result(t, nt_samples)
            else:
                parts = run.split(stats[AGGREGATE_OF[t]][0].to(problem.x.dtype))
            out[t] = run.format(parts)
        result = out[types[0]] if single else out
        return (result, run.deltas()) if want_delta else result

    def _attribute_at_layer(self, problem: Problem, noise_at: Any, options: dict[str, Any],
                            want_delta: bool, types: tuple[str, ...], single: bool,
                            batch_size: int | None, stdevs: Any, noise_level: Any,
                            checked: Options) -> Any:
        """``noise_at``: counter noise on the layer's clean activation, the layer algorithm's
        arithmetic with respect to the noisy activation (:mod:`.layer_noise`)."""
        check_layer_strategy(checked.passes)
        run = LayerNoiseRun(self.attribution_method, problem, noise_at, options, want_delta)
        source = checked.input_noise(run.activation, run.sigma(stdevs, noise_level))
        dtype = run.result_dtype
        job = build_job(checked, method=run.method, source=source, target=run.target,
                        samples_per_pass=batch_size or run.samples_per_pass(checked.n_samples),
                        accumulator_dtype=_accumulator_dtype(dtype))
        with model_session(problem.model, run.method, problem.x):
            (stats,) = engine.run(run.runner(checked.passes), job)
        out = {t: run.format(run.split(stats[AGGREGATE_OF[t]][0].to(dtype))) for t in types}
        result = out[types[0]] if single else out
        return (result, run.deltas()) if want_delta else result

    _attribute_holding_inputs = _attribute

    @functools.wraps(_attribute)
    def _attribute(self, *args: Any, **kwargs: Any) -> Any:
        # one call at a time on the user's model (and on this tunnel's kept wrapper)
        with model_lock(self.attribution_method.forward_func), model_lock(self):
            try:
                return self._attribute_holding_inputs(*args, **kwargs)
            finally:      # the kept wrapper lets go of this call's additional_forward_args
                flat = getattr(self, "_flat_model", None)
                if flat is not None:
                    flat.release()

    @functools.wraps(_attribute)
    def attribute(self, *args: Any, rng: str = "smoothkern", **kwargs: Any) -> Any:
        return self._attribute(*args, rng=rng, **kwargs)

    attribute = log_usage()(attribute)
    # What Captum's internals call, bypassing usage logging: Captum's draws by default.
    attribute.__wrapped__ = _attribute
    attribute.__signature__ = inspect.signature(_attribute).replace(parameters=[
        p.replace(default="smoothkern") if p.name == "rng" else p
        for p in inspect.signature(_attribute).parameters.values()])


class _NativeRun:
    """A call of one of the six classes smoothkern has a method for."""

    native = True

    def __init__(self, name: str, algorithm: Any, problem: Problem, options: dict[str, Any],
                 want_delta: bool, bounded_steps: bool, preparations: tuple[str, ...]) -> None:
        self.problem, self.name, self.preparations = problem, name, preparations
        self.method = native_method(name, algorithm, problem,
                                    {k: v for k, v in options.items() if k not in _CALL_OPTIONS},
                                    want_delta, bounded_steps)
        self.logits, self.row_bytes = clean_forward(problem.model, problem.x)
        self.target = format_target(options.get("target"), problem.x.shape[0],
                                    problem.model.output_shape).to(problem.x.device)

    def runner(self, passes: str) -> nn.Module:
        """The prepared copy of the wrapped model the passes run (smoothkern.model_cache)."""
        if self.method.uses_model_structure:
            return self.problem.model
        return prepared_model(self.problem.model, self.problem.x, self.logits,
                              usable_preparations(self.preparations, passes))

    def part_shapes(self) -> list[tuple[int, ...]]:
        if input_shaped(self.name):
            return list(self.problem.layout.shapes)
        return [self.method.output_shape(self.problem.model, self.problem.x[:1])]

    def samples_per_pass(self, options: Options) -> int:
        """Sized as ``smooth_grad`` sizes its passes (bf16 rows from bf16 bytes)."""
        return planned_samples_per_pass(self.problem.model, self.problem.x, self.row_bytes,
                                        self.method.rows_per_sample, 1, options)

    def split(self, flat: Tensor) -> tuple[Tensor, ...]:
        if input_shaped(self.name):
            return self.problem.layout.split(flat)
        return (flat,)

    def format(self, parts: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        empty = getattr(self.method, "uninterpolated", set())
        if empty:
            warnings.warn(f"Grad-CAM's map cannot be interpolated to inputs {sorted(empty)} "
                          "(other spatial dims); their attributions are empty tensors, as in "
                          "Captum", stacklevel=3)
            parts = tuple(torch.empty(0, device=t.device) if i in empty else t
                          for i, t in enumerate(parts))
        return parts if (input_shaped(self.name) and self.problem.is_tuple) else parts[0]

    def deltas(self) -> Tensor:
        """Per-pass deltas (engine order s*B + b) → Captum's order: per chunk, b*k + s."""
        batch = self.problem.x.shape[0]
        return torch.cat([d.view(-1, batch).t().reshape(-1) for d in self.method.deltas])


class _GenericRun:
    """Any other Captum algorithm: its own ``attribute`` per chunk (:class:`CaptumAlgorithm`)."""

    native = False

    def __init__(self, algorithm: Any, problem: Problem, options: dict[str, Any],
                 want_delta: bool) -> None:
        self.problem = problem
        problem.model.strict = False         # any output: Captum's algorithm reads it itself
        self.method = CaptumAlgorithm(algorithm, problem.inputs, problem.is_tuple,
                                      problem.layout, options, want_delta)
        self.target = torch.zeros(problem.x.shape[0], dtype=torch.int64, device=problem.x.device)

    def runner(self, passes: str) -> nn.Module:
        """Captum's algorithm hooks and calls the caller's model itself: nothing is prepared."""
        return self.problem.model

    def part_shapes(self) -> list[tuple[int, ...]]:
        assert self.method.structure is not None
        return list(self.method.structure[1])

    def samples_per_pass(self, options: Options) -> int:
        _, row_bytes = forward_measuring_saved_bytes(self.problem.model, self.problem.x)
        return planned_samples_per_pass(self.problem.model, self.problem.x, row_bytes,
                                        self.method.rows_per_sample, 1, options)

    def split(self, flat: Tensor) -> tuple[Tensor, ...]:
        return self.method.split_result(flat)

    def format(self, parts: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
        assert self.method.structure is not None
        return parts if self.method.structure[0] else parts[0]

    def deltas(self) -> Tensor:
        return torch.cat(self.method.deltas, dim=0)


def _check_captum_mode(noise: str, noise_level: Any, seed: int | None, backend: str) -> None:
    """Before any work (and before any draw from numpy's or torch's global generator)."""
    if noise != "gaussian" or noise_level is not None or seed is not None:
        raise CaptumArgumentError("rng='captum' draws Captum's Gaussian noise from torch's "
                                  "global generator: noise, noise_level and seed are not "
                                  "available (seed with torch.manual_seed)")
    if backend in ("loop", "vmap"):
        raise CaptumArgumentError("rng='captum' replays Captum's chunks in batched passes; "
                                  "backend 'loop' and 'vmap' are not available")


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """Float64 statistics for float64 inputs (Captum's arithmetic), else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _sigma(problem: Problem, stdevs: tuple[float, ...], noise_level: Any) -> Tensor:
    """σ for the counter-based source: Tensor[1, B] when every input shares it, else a σ per
    element, Tensor[1, B, N] (N: elements of the joined example)."""
    count, batch = len(problem.inputs), problem.x.shape[0]
    if noise_level is None:
        per_input = torch.tensor(stdevs, dtype=torch.float64).view(1, count).expand(batch, count)
    else:
        levels = format_stdevs(noise_level, count)
        per_input = torch.stack(
            [(t.detach().reshape(batch, -1).double().amax(1) -
              t.detach().reshape(batch, -1).double().amin(1)) * level
             for t, level in zip(problem.inputs, levels)], dim=1)
    per_input = per_input.to(problem.x.device, torch.float32)                  # [B, K]
    if bool((per_input == per_input[:, :1]).all()):
        return per_input[:, 0].unsqueeze(0)
    sizes = torch.tensor(problem.layout.sizes, device=per_input.device)
    return torch.repeat_interleave(per_input, sizes, dim=1).unsqueeze(0)


def _check_types(nt_type: Any) -> tuple[tuple[str, ...], bool]:
    single = isinstance(nt_type, str)
    types = (nt_type,) if single else tuple(nt_type)
    if not types or len(set(types)) != len(types):
        raise CaptumArgumentError(f"nt_type must be a name or distinct names, got {nt_type!r}")
    for t in types:
        if t not in AGGREGATE_OF:
            raise CaptumArgumentError(f"unknown nt_type {t!r}; choose from "
                                      f"{tuple(AGGREGATE_OF)}")
    return types, single


def _check_samples(nt_samples: Any, batch_size: Any) -> tuple[int, int | None]:
    for name, value in (("nt_samples", nt_samples), ("nt_samples_batch_size", batch_size)):
        if value is None and name == "nt_samples_batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CaptumArgumentError(f"{name} must be an int >= 1, got {value!r}")
    return nt_samples, None if batch_size is None else min(nt_samples, batch_size)
