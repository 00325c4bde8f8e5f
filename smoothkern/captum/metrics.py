"""A drop-in for ``captum.metrics``: change ``from captum.metrics import sensitivity_max`` to
``from smoothkern.captum.metrics import sensitivity_max``.

The same names and signatures, and for the same seed the same numbers. ``sensitivity_max`` of a
smoothkern explanation (``smoothkern.captum.NoiseTunnel(...).attribute``, ``smooth_grad``,
``noise_grad``) runs its clean and perturbed explanations as one batched job; ``infidelity``
runs the clean forward once instead of once per chunk. See :mod:`smoothkern.metrics.robustness`.
"""

from __future__ import annotations

from ..metrics.infidelity import infidelity, infidelity_perturb_func_decorator
from ..metrics.sensitivity import sensitivity_max

__all__ = ["infidelity", "infidelity_perturb_func_decorator", "sensitivity_max"]
