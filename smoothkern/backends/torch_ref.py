"""The pure-torch kernel set "torch": the Philox reference of :mod:`smoothkern.noise` and the
reference accumulator of :mod:`smoothkern.stats` (also behind the "vmap" and "loop" names)."""

from __future__ import annotations

from ..noise import perturb_reference
from ..core.stats import accumulate_reference
from .registry import Backend, register

TORCH = register(Backend(
    name="torch", perturb=perturb_reference, accumulate=accumulate_reference, auto_priority=0,
    description="pure-torch Philox noise and streaming statistics (the kernels' reference)"))
