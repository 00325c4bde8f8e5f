"""Robustness metrics of explanations, batched: sensitivity (max and average) and infidelity.

Captum's ``captum.metrics`` signatures and, for the same seed, its numbers; the names
``smoothkern.captum.metrics`` serves for code written against Captum. When the explanation is
smoothkern's (``smooth_grad``, ``noise_grad`` or the drop-in's ``NoiseTunnel``), a sensitivity
metric runs all its explanations as one batched job (:mod:`.sensitivity_fused`).

    sens = sensitivity_max(functools.partial(sk.smooth_grad, model, n_samples=50), x,
                           target=y, n_perturb_samples=10)          # Tensor[B]
"""

from __future__ import annotations

from .infidelity import infidelity, infidelity_perturb_func_decorator
from .robust_checks import MetricArgumentError
from .sensitivity import avg_sensitivity, default_perturb_func, sensitivity_max

__all__ = ["MetricArgumentError", "avg_sensitivity", "default_perturb_func", "infidelity",
           "infidelity_perturb_func_decorator", "sensitivity_max"]
