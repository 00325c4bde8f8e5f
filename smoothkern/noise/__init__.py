"""Noise: the counter generator (:mod:`.philox`), the noise kinds (:mod:`.kinds`) and σ planning
(:mod:`.sigma`). The perturb op that adds the noise to inputs is :mod:`smoothkern.ops.perturb`."""

from .kinds import NOISE_KIND_NAMES, NoiseKind, parse_noise_kind
from .philox import MAX_COUNTER, check_seed, philox4x32, raw_bits, standard_noise, uint_to_unit
from .sigma import plan_sigma

__all__ = ["MAX_COUNTER", "NOISE_KIND_NAMES", "NoiseKind", "check_seed", "parse_noise_kind",
           "philox4x32", "plan_sigma", "raw_bits", "standard_noise", "uint_to_unit"]
