"""The rows' calls: smoothkern (loop, fp32, reduced precision, a named backend) and Captum's
NoiseTunnel, each a no-argument call returning its map."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import machine
from .names import CAPTUM_CHUNK, VARIANTS

PRECISIONS = {"smoothkern-bf16": torch.bfloat16, "smoothkern-fp16": torch.float16}
# smoothkern aggregate -> Captum nt_type; the other aggregates have no Captum counterpart.
CAPTUM_NT_TYPES = {"mean": "smoothgrad", "sq": "smoothgrad_sq", "var": "vargrad"}
# smoothkern method -> (captum.attr class, attribute() keywords fixed by the method).
CAPTUM_METHODS = {"gradient": ("Saliency", {"abs": False}), "saliency": ("Saliency", {}),
                  "input_x_gradient": ("InputXGradient", {}),
                  "integrated_gradients": ("IntegratedGradients", {}),
                  "guided_backprop": ("GuidedBackprop", {})}
# Method options with a Captum attribute() keyword of another name (or the same).
CAPTUM_OPTIONS = {"abs": "abs", "n_steps": "n_steps", "integration": "method"}


def _first(aggregate: str | Sequence[str]) -> str:
    return aggregate if isinstance(aggregate, str) else tuple(aggregate)[0]


def captum_reason(method: Any, aggregate: str | Sequence[str],
                   options: dict[str, Any]) -> str | None:
    """Why Captum's NoiseTunnel cannot run this configuration here, or None."""
    if machine.captum_version() is None:
        return "captum is not installed (pip install captum)"
    if not isinstance(method, str) or method not in CAPTUM_METHODS:
        return f"no Captum counterpart wired for method {method!r} here"
    if _first(aggregate) not in CAPTUM_NT_TYPES:
        return f"Captum's NoiseTunnel has no aggregate {_first(aggregate)!r}"
    unknown = sorted(set(options) - set(CAPTUM_OPTIONS))
    if unknown:
        return f"method options {unknown} have no Captum mapping here"
    return None


def smoothkern_call(model, x, target, cfg, **extra) -> Callable[[], Tensor]:
    from ..api import smooth_grad

    aggregate = cfg["aggregate"]

    def call() -> Tensor:
        out = smooth_grad(model, x, target, n_samples=cfg["n_samples"], stdevs=cfg["sigma"],
                          aggregate=aggregate, method=cfg["method"], seed=cfg["seed"],
                          **cfg["method_options"], **extra)
        return out[_first(aggregate)] if isinstance(out, dict) else out

    return call


def captum_call(model, x, target, cfg, chunk: int | None) -> Callable[[], Tensor]:
    import captum.attr as ca

    name, fixed = CAPTUM_METHODS[cfg["method"]]
    tunnel = ca.NoiseTunnel(getattr(ca, name)(model))
    kwargs = dict(fixed)
    for key, value in cfg["method_options"].items():
        kwargs[CAPTUM_OPTIONS[key]] = value
    if name == "IntegratedGradients":
        kwargs.setdefault("method", "gausslegendre")  # smoothkern's default rule too

    def call() -> Tensor:
        torch.manual_seed(cfg["seed"])  # Captum draws from the global generator
        return tunnel.attribute(x, nt_type=CAPTUM_NT_TYPES[_first(cfg["aggregate"])],
                                nt_samples=cfg["n_samples"], stdevs=cfg["sigma"],
                                nt_samples_batch_size=chunk, target=target, **kwargs)

    return call


def make_call(variant: str, model: nn.Module, x: Tensor, target: Tensor,
              cfg: dict[str, Any]) -> Callable[[], Tensor]:
    """A no-argument call of one variant, returning its map (the first aggregate)."""
    if variant == "loop":
        return smoothkern_call(model, x, target, cfg, backend="loop")
    if variant == "smoothkern":
        return smoothkern_call(model, x, target, cfg)
    if variant in PRECISIONS:
        return smoothkern_call(model, x, target, cfg, compute_dtype=PRECISIONS[variant])
    if variant.startswith("backend="):
        return smoothkern_call(model, x, target, cfg, backend=variant.split("=", 1)[1])
    if variant == "captum":
        return captum_call(model, x, target, cfg, None)
    if variant == "captum-bs10":
        return captum_call(model, x, target, cfg, CAPTUM_CHUNK)
    raise ValueError(f"unknown benchmark variant {variant!r}; choose from {VARIANTS}")


def captum_estimate_gb(model, inputs, n_samples, method, options) -> float:
    """Saved activations of Captum's unchunked pass (all m·B rows, × n_steps for IG)."""
    from ..core.planning import forward_measuring_saved_bytes

    try:
        per_row = forward_measuring_saved_bytes(model, inputs[:1])[1]
    except Exception:  # noqa: BLE001 - the estimate is advisory; smooth_grad reports real errors
        return 0.0
    steps = options.get("n_steps", 50) if method == "integrated_gradients" else 1
    return per_row * n_samples * inputs.shape[0] * steps / 2**30
