"""``NoiseTunnel``: Captum's interface, smoothkern's batched engine underneath."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..api import make_plan, run_plan
from ..backends import resolve as resolve_backend
from .attributions import Attribution, IntegratedGradients, Problem, adopt, build_problem
from .baseline_draws import BaselineDraws, with_baseline_draws
from .inputs import format_stdevs
from .noise_sources import (
    CaptumNoise,
    CaptumSums,
    captum_backend,
    captum_chunks,
    counter_backend,
    element_sigma,
)

CAPTUM_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
# nt_type → smoothkern aggregate; "abs" and "geomean" are smoothkern's extras
AGGREGATE_OF = {"smoothgrad": "mean", "smoothgrad_sq": "sq", "vargrad": "var", "abs": "abs",
                "geomean": "geomean"}
RNG_MODES = ("smoothkern", "captum")


class NoiseTunnel:
    """Captum's ``NoiseTunnel(attribution_method)``, batched by smoothkern's engine.

    Args:
        attribution_method: a ``smoothkern.captum`` attribution or the matching
            ``captum.attr`` object (Saliency, InputXGradient, IntegratedGradients,
            GuidedBackprop, LayerGradCam, GuidedGradCam).
    """

    def __init__(self, attribution_method: Any) -> None:
        self.attribution_method: Attribution = adopt(attribution_method)
        self.is_delta_supported = self.attribution_method.has_convergence_delta()
        self.forward_func = self.attribution_method.forward_func

    def has_convergence_delta(self) -> bool:
        return self.is_delta_supported

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution_method.multiplies_by_inputs

    def attribute(self, inputs: Tensor | tuple[Tensor, ...],
                  nt_type: str | Sequence[str] = "smoothgrad", nt_samples: int = 5,
                  nt_samples_batch_size: int | None = None,
                  stdevs: float | tuple[float, ...] = 1.0,
                  draw_baseline_from_distrib: bool = False, *, noise: str = "gaussian",
                  noise_level: float | tuple[float, ...] | None = None, seed: int | None = None,
                  backend: str = "auto", rng: str = "smoothkern", **kwargs: Any) -> Any:
        """Noise-averaged attributions, Captum's arguments and output structure.

        Args:
            inputs: Tensor[B, ...] or a tuple of them (examples aligned on dim 0).
            nt_type: "smoothgrad", "smoothgrad_sq", "vargrad", or smoothkern's "abs" (mean of
                |a|) and "geomean"; a tuple of them returns a dict keyed by nt_type.
            nt_samples: noise samples per example.
            nt_samples_batch_size: samples per pass. With rng="captum" Captum's chunking (and
                memory); otherwise None lets smoothkern choose, and results do not depend on it.
            stdevs: σ of the Gaussian noise, one float or one per input.
            draw_baseline_from_distrib: give each noisy row a baseline drawn at random from the
                rows of ``baselines`` (Tensor[M, ...] per input, any M), like Captum; with the
                default rng the draws come from the counter-based stream (``seed``), with
                rng="captum" from numpy's global generator exactly as Captum draws them.
            noise: "gaussian" or "uniform" (same σ). Not with rng="captum".
            noise_level: σ relative to each example's range (max - min) per input, instead of
                ``stdevs``; a float or one per input. Not with rng="captum".
            seed: the counter-based stream's seed (default 0). With rng="captum" the noise comes
                from torch's global generator: seed it with ``torch.manual_seed``.
            backend: smoothkern backend name ("auto", "torch", "loop", ...).
            rng: "smoothkern" (reproducible counter-based noise, chunk invariant) or "captum"
                (Captum's exact draws: equal to ``captum.attr.NoiseTunnel`` after the same seed).
            **kwargs: the attribution method's ``attribute`` arguments: ``target``,
                ``additional_forward_args``, ``baselines``, ``n_steps``, ``method``,
                ``internal_batch_size``, ``return_convergence_delta``, ``abs``, ...

        Returns:
            Like Captum: attributions (Tensor or tuple), or ``(attributions, delta)`` with
            ``return_convergence_delta=True`` (delta: Tensor[B * nt_samples], example-major).
        """
        types, single = _check_types(nt_type)
        nt_samples, batch_size = _check_samples(nt_samples, nt_samples_batch_size)
        if rng not in RNG_MODES:
            raise ValueError(f"rng must be one of {RNG_MODES}, got {rng!r}")
        if rng == "captum":
            _check_captum_mode(noise, noise_level, seed, backend)
        kwargs = dict(kwargs)
        want_delta = bool(kwargs.pop("return_convergence_delta", False))
        if want_delta and not self.is_delta_supported:
            raise ValueError(f"{type(self.attribution_method).__name__} has no convergence delta")
        target = kwargs.pop("target", None)
        extra = kwargs.pop("additional_forward_args", None)
        takes_baselines = "baselines" in self.attribution_method.method_params
        drawn = kwargs.pop("baselines", None) if (
            draw_baseline_from_distrib and takes_baselines) else None
        params = self.attribution_method.split_params(kwargs)
        if kwargs:
            raise TypeError(f"unexpected arguments for {type(self.attribution_method).__name__}"
                            f": {sorted(kwargs)}")
        attribution = self.attribution_method
        if isinstance(attribution, IntegratedGradients) and params["internal_batch_size"] is None \
                and rng == "smoothkern":
            params = {**params, "internal_batch_size": "auto"}  # bounded memory
        problem = build_problem(attribution.forward_func, inputs, target, extra, measure=True)
        method = attribution.make_method(problem, params, record_delta=want_delta)
        draws = None
        if drawn is not None:
            draws = BaselineDraws(drawn, problem.inputs, problem.layout,
                                  0 if seed is None else seed,
                                  captum_chunks(nt_samples, batch_size) if rng == "captum"
                                  else None)
        common = dict(target=problem.target, n_samples=nt_samples, method=method,
                      accumulator_dtype=torch.float64 if problem.x.dtype == torch.float64
                      else torch.float32)
        if rng == "captum":
            results = self._captum_rng(problem, method, types, nt_samples, batch_size, stdevs,
                                       common, draws)
        else:
            results = self._smoothkern_rng(problem, types, batch_size, stdevs, noise,
                                           noise_level, seed, backend, common, draws)
        out = {t: attribution.format_result(problem, results[t], method) for t in types}
        out = out[types[0]] if single else out
        if want_delta:
            return out, _captum_order_deltas(method.deltas, problem.x.shape[0])
        return out

    # -------------------------------------------------------------------------------------------

    @staticmethod
    def _smoothkern_rng(problem: Problem, types: tuple[str, ...], batch_size: int | None,
                        stdevs: Any, noise: str, noise_level: Any, seed: int | None,
                        backend: str, common: dict, draws: BaselineDraws | None
                        ) -> dict[str, Tensor]:
        sigma = _sigma_per_input(problem, stdevs, noise_level)                   # [B, K]
        same = bool((sigma == sigma[:, :1]).all())
        per_pass = batch_size
        if same and backend != "loop":
            engine_backend, engine_stdevs = backend, sigma[:, 0]
        else:  # a σ per input needs its own perturb; "loop": one sample per pass
            engine_backend = counter_backend(element_sigma(sigma, problem.layout))
            engine_stdevs = sigma[:, 0]
            per_pass = 1 if backend == "loop" else batch_size
        if draws is not None:
            if isinstance(engine_backend, str):
                engine_backend = resolve_backend(engine_backend, problem.x.device)
            engine_backend = with_baseline_draws(engine_backend, common["method"], draws)
        names = tuple(AGGREGATE_OF[t] for t in types)
        res = _engine(problem, stdevs=engine_stdevs, noise=noise, aggregate=names,
                      samples_per_pass=per_pass, seed=0 if seed is None else seed,
                      backend=engine_backend, **common)
        return {t: res[AGGREGATE_OF[t]].to(problem.x.dtype) for t in types}

    @staticmethod
    def _captum_rng(problem: Problem, method: Any, types: tuple[str, ...], nt_samples: int,
                    batch_size: int | None, stdevs: Any, common: dict,
                    draws: BaselineDraws | None) -> dict[str, Any]:
        sds = format_stdevs(stdevs, len(problem.inputs))
        chunks = captum_chunks(nt_samples, batch_size)
        shapes = (list(problem.layout.shapes) if _input_shaped(method, problem)
                  else [method.output_shape(problem.model, problem.x[:1])])
        sums = CaptumSums(problem.x.shape[0], shapes)
        source = CaptumNoise(problem.inputs, sds, problem.layout, chunks)
        extras = tuple(AGGREGATE_OF[t] for t in types if t not in CAPTUM_TYPES)
        engine_backend = captum_backend(source, sums)
        if draws is not None:
            engine_backend = with_baseline_draws(engine_backend, method, draws)
        res = _engine(problem, stdevs=max(sds), aggregate=extras or "mean",
                      samples_per_pass=chunks[0], backend=engine_backend, **common)
        out: dict[str, Any] = {}
        for t in types:
            if t in CAPTUM_TYPES:
                out[t] = sums.result(t, nt_samples)
            else:
                value = res[AGGREGATE_OF[t]] if isinstance(res, dict) else res
                out[t] = value.to(problem.x.dtype)
        return out


def _check_captum_mode(noise: str, noise_level: Any, seed: int | None, backend: str) -> None:
    """Before any work (and before any draw from numpy's or torch's global generator)."""
    if noise != "gaussian" or noise_level is not None or seed is not None:
        raise ValueError("rng='captum' draws Captum's Gaussian noise from torch's global "
                         "generator: noise, noise_level and seed are not available (seed "
                         "with torch.manual_seed)")
    if backend not in ("auto", "torch"):
        raise ValueError("rng='captum' runs Captum's chunks in batched passes; backend "
                         "must be 'auto' or 'torch'")


def _engine(problem: Problem, **options: Any) -> Tensor | dict[str, Tensor]:
    """``smooth_grad`` on the problem's joined inputs, reusing the problem's clean forward."""
    settings = {"noise_level": None, "noise": "gaussian", "snapshots": None, "seed": 0,
                "eps": 1e-10, "method_options": {}, **options}
    target = settings.pop("target")
    plan = make_plan(problem.model, problem.x, target, clean_forward=problem.clean, **settings)
    return run_plan(problem.model, problem.x, plan)


def _input_shaped(method: Any, problem: Problem) -> bool:
    from ..methods import GradCam

    return not isinstance(method, GradCam)


def _sigma_per_input(problem: Problem, stdevs: Any, noise_level: Any) -> Tensor:
    """σ per example and input, Tensor[B, K] float32."""
    count, batch = len(problem.inputs), problem.x.shape[0]
    if noise_level is None:
        values = torch.tensor(format_stdevs(stdevs, count), dtype=torch.float64)
        return values.view(1, count).expand(batch, count).to(problem.x.device, torch.float32)
    levels = format_stdevs(noise_level, count)
    spans = [(t.detach().reshape(batch, -1).double().amax(1) -
              t.detach().reshape(batch, -1).double().amin(1)) * level
             for t, level in zip(problem.inputs, levels)]
    return torch.stack(spans, dim=1).to(problem.x.device, torch.float32)


def _captum_order_deltas(deltas: list[Tensor], batch: int) -> Tensor:
    """Per-pass deltas (engine order s*B + b) → Captum's order: per chunk, b*k + s."""
    return torch.cat([d.view(-1, batch).t().reshape(-1) for d in deltas])


def _check_types(nt_type: Any) -> tuple[tuple[str, ...], bool]:
    single = isinstance(nt_type, str)
    types = (nt_type,) if single else tuple(nt_type)
    if not types or len(set(types)) != len(types):
        raise ValueError(f"nt_type must be a name or distinct names, got {nt_type!r}")
    for t in types:
        if t not in AGGREGATE_OF:
            raise ValueError(f"unknown nt_type {t!r}; choose from {tuple(AGGREGATE_OF)}")
    return types, single


def _check_samples(nt_samples: Any, batch_size: Any) -> tuple[int, int | None]:
    for name, value in (("nt_samples", nt_samples), ("nt_samples_batch_size", batch_size)):
        if value is None and name == "nt_samples_batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return nt_samples, None if batch_size is None else min(nt_samples, batch_size)
