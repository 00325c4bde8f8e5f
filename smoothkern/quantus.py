"""An ``explain_func`` for Quantus: an existing Quantus evaluation runs its explanations through
smoothkern by changing one argument.

Quantus's PyTorch path has no SmoothGrad (its ``SmoothGrad`` runs only through TensorFlow), so
a PyTorch user writes an ``explain_func`` around Captum's ``NoiseTunnel``. This one takes
Quantus's conventions (numpy in, numpy out, ``method=`` names, ``num_samples``/``noise`` for
SmoothGrad, ``reduce_axes``/``keepdims``, ``device``, ``softmax``, ``gc_layer``/``interpolate``
for Grad-CAM) as ``quantus.explain`` does for Captum, and runs each call as one batched job::

    import quantus
    from smoothkern.quantus import explain

    metric = quantus.MaxSensitivity(nr_samples=10, lower_bound=0.2)
    scores = metric(model=model, x_batch=x, y_batch=y, explain_func=explain,
                    explain_func_kwargs={"method": "SmoothGrad", "num_samples": 50,
                                         "noise": 0.1})

Like Quantus's own ``explain``, the default ``reduce_axes=(1,)`` sums the attribution over the
channel axis (keeping it, ``keepdims=True``); ``abs`` and ``normalise`` are the metric's
settings, applied by Quantus after the call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .api import smooth_grad
from .noise_grad import noise_grad

# Quantus's method names, and the keywords of each method's own (Quantus's and NoiseGrad's).
METHOD_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Gradient": (), "Saliency": (), "InputXGradient": (), "IntegratedGradients": ("baseline",),
    "SmoothGrad": ("num_samples", "noise"),
    "NoiseGrad": ("n", "std", "mean", "noise_type"),
    "FusionGrad": ("n", "std", "mean", "noise_type", "m", "sg_std", "sg_mean"),
    "GradCAM": ("gc_layer",), "LayerGradCam": ("gc_layer",),
}
METHODS = tuple(METHOD_KEYWORDS)
# Keywords of ``quantus.explain`` this function reads; other Quantus keywords it ignores as
# Quantus's Captum path does (they configure other libraries).
IGNORED = ("xai_lib", "xai_lib_kwargs", "channel_first", "interpolate_mode")
# smoothkern's own options, passed on as they are.
PASSED = ("seed", "backend", "samples_per_pass", "memory_limit", "compute_dtype", "prepare")


def explain(model: nn.Module, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
    """Attributions of ``inputs`` for ``targets`` as Quantus's ``explain_func`` expects.

    Args:
        model: a PyTorch classifier in eval mode (Quantus's ``model``); not changed.
        inputs (array[B, ...]): numpy array (or Tensor), channel first as Quantus passes it.
        targets (array[B] | int): the classes.
        **kwargs: Quantus's keywords:

            - ``method``: "Gradient" (default), "Saliency" (|gradient|), "InputXGradient",
              "IntegratedGradients" (zero ``baseline`` unless given, 10 trapezoid steps as
              Quantus runs Captum's), "SmoothGrad" (``num_samples`` noisy copies, default 5,
              Gaussian noise of absolute standard deviation ``noise``, default 0.1: the
              arguments Quantus gives tf-explain), "NoiseGrad" (``n`` weight draws, default
              10, multiplicative weight noise ``std``, default 0.2, ``noise_type``),
              "FusionGrad" (NoiseGrad with ``m`` input samples each, default 10, of absolute
              standard deviation ``sg_std``, default 0.2), "GradCAM"/"LayerGradCam" (layer
              ``gc_layer``: a module, a dotted path, or Quantus's "model.features[3]" form;
              ``interpolate`` (H, W) upsamples the map).
            - ``reduce_axes`` (default (1,), the channel axis; () keeps every axis) and
              ``keepdims`` (default True).
            - ``device``: where to compute (default: the model's device).
            - ``softmax``: True explains the softmax probabilities instead of the logits.
            - smoothkern's own: ``seed`` (default None: fresh noise per call from torch's
              generator, as Captum draws it; an int fixes the noise), ``backend``,
              ``samples_per_pass``, ``memory_limit``, ``compute_dtype``, ``prepare``.

    Returns:
        float32 numpy array [B, ...], reduced as ``reduce_axes`` says.

    Raises:
        ValueError, TypeError: an unknown method or keyword, a reduction over the batch axis.
    """
    method = kwargs.pop("method", "Gradient")
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one smoothkern runs for Quantus; choose "
                         f"from {METHODS}")
    device = kwargs.pop("device", None)
    reduce_axes = tuple(kwargs.pop("reduce_axes", (1,)))
    keepdims = kwargs.pop("keepdims", True)
    softmax = kwargs.pop("softmax", None)
    interpolate = kwargs.pop("interpolate", None)
    mode = kwargs.get("interpolate_mode", "nearest")
    for name in IGNORED:
        kwargs.pop(name, None)
    x, target = _tensors(model, inputs, targets, device)
    if 0 in reduce_axes or len(reduce_axes) > x.dim() - 1:
        raise ValueError(f"reduce_axes {reduce_axes}: the batch axis 0 cannot be reduced, and "
                         f"at most {x.dim() - 1} axes can")
    options = {k: kwargs.pop(k) for k in PASSED if k in kwargs}
    unknown = sorted(set(kwargs) - set(METHOD_KEYWORDS[method]))
    if unknown:
        raise TypeError(f"unknown keywords for method {method!r}: {unknown} (its own: "
                        f"{METHOD_KEYWORDS[method]}; smoothkern's: {PASSED})")
    if options.get("seed") is None:
        options["seed"] = int(torch.randint(0, 2**62, ()).item())
    if softmax:
        options["output"] = _softmax
    run = _RUNS[method]
    maps = run(model, x, target, kwargs, options)
    if interpolate is not None:
        maps = F.interpolate(maps, size=tuple(interpolate), mode=mode)
    if reduce_axes and maps.dim() >= 3:
        maps = maps.sum(dim=reduce_axes, keepdim=keepdims)
    return maps.detach().to("cpu", torch.float32).numpy()


def _tensors(model: nn.Module, inputs: Any, targets: Any, device: Any
             ) -> tuple[Tensor, Tensor]:
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, Tensor) else inputs)
    x = x.to(device=device, dtype=torch.float32)
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, Tensor) else targets)
    t = t.to(device=device, dtype=torch.int64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    return x.detach(), t


def _softmax(out: Tensor) -> Tensor:
    return out.softmax(1)


def _plain(method: str, **method_options: Any) -> Callable[..., Tensor]:
    def run(model, x, target, kwargs, options):
        options = {**options, **method_options}
        if method == "integrated_gradients":
            options["n_steps"] = 10
            options["integration"] = "riemann_trapezoid"
            if "baseline" in kwargs:
                options["baseline"] = _baseline(kwargs.pop("baseline"), x)
        return smooth_grad(model, x, target, method=method, n_samples=1, noise_level=0.0,
                           **options)
    return run


def _smooth_grad(model, x, target, kwargs, options):
    n = kwargs.pop("num_samples", 5)
    sigma = kwargs.pop("noise", 0.1)
    return smooth_grad(model, x, target, n_samples=n, stdevs=float(sigma), **options)


def _noise_grad(fusion: bool) -> Callable[..., Tensor]:
    def run(model, x, target, kwargs, options):
        settings = dict(n_models=kwargs.pop("n", 10), weight_noise=kwargs.pop("std", 0.2),
                        noise_kind=kwargs.pop("noise_type", "multiplicative"))
        kwargs.pop("mean", None)            # NoiseGrad's mean multiplier: 1 (centred noise)
        if fusion:
            settings.update(n_samples=kwargs.pop("m", 10), stdevs=kwargs.pop("sg_std", 0.2))
            kwargs.pop("sg_mean", None)
        return noise_grad(model, x, target, **settings, **options)
    return run


def _grad_cam(model, x, target, kwargs, options):
    if "gc_layer" not in kwargs:
        raise ValueError("GradCAM needs the layer: gc_layer= a module, a dotted path "
                         "(\"features.3\") or Quantus's \"model.features[3]\"")
    layer = _layer(kwargs.pop("gc_layer"))
    return smooth_grad(model, x, target, method="grad_cam", layer=layer, n_samples=1,
                       noise_level=0.0, **options)


def _layer(layer: Any) -> nn.Module | str:
    if not isinstance(layer, str):
        return layer
    path = re.sub(r"\[(\d+)\]", r".\1", layer)           # "model.features[3]" → .features.3
    path = path[len("model."):] if path.startswith("model.") else path
    return path


def _baseline(value: Any, x: Tensor) -> Tensor | float:
    if isinstance(value, (int, float)):
        return float(value)
    return torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value
                           ).to(x.device, x.dtype)


_RUNS: dict[str, Callable[..., Tensor]] = {
    "Gradient": _plain("gradient"),
    "Saliency": _plain("saliency"),
    "InputXGradient": _plain("input_x_gradient"),
    "IntegratedGradients": _plain("integrated_gradients"),
    "SmoothGrad": _smooth_grad,
    "NoiseGrad": _noise_grad(fusion=False),
    "FusionGrad": _noise_grad(fusion=True),
    "GradCAM": _grad_cam,
    "LayerGradCam": _grad_cam,
}
