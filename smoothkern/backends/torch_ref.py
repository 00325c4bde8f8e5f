"""Pure-torch backends: "torch" (batched passes), "vmap" and "loop" (the naive reference).

All three draw noise with the vectorised torch Philox of :mod:`smoothkern.noise` and reduce with
the reference accumulator of :mod:`smoothkern.stats`; they differ only in how the model runs.
"""

from __future__ import annotations

from ..noise import perturb_reference
from ..stats import accumulate_reference
from .registry import Backend, register

TORCH = register(Backend(
    name="torch", perturb=perturb_reference, accumulate=accumulate_reference,
    pass_mode="batched", auto_priority=0,
    description="batched passes, pure-torch Philox noise and streaming statistics"))

VMAP = register(Backend(
    name="vmap", perturb=perturb_reference, accumulate=accumulate_reference,
    pass_mode="vmap",
    description="torch.func.vmap(torch.func.grad(...)) over the noisy copies"))

LOOP = register(Backend(
    name="loop", perturb=perturb_reference, accumulate=accumulate_reference,
    pass_mode="loop",
    description="the naive reference: one forward/backward per noise sample, all m kept"))
