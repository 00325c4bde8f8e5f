"""Weight noise for NoiseGrad/FusionGrad (:func:`smoothkern.noise_grad`): counter-based weight
draws, the engine's source and method for them, and the reference copy of one drawn model."""

from __future__ import annotations

from ..sources.weights import WeightNoiseSource
from .draws import WEIGHT_KEY_MIX, WEIGHT_NOISE_KINDS, WeightDraws, drawn_model, weight_key
from .method import OnDrawnWeights, StackedDraws

__all__ = ["WEIGHT_KEY_MIX", "WEIGHT_NOISE_KINDS", "OnDrawnWeights", "StackedDraws", "WeightDraws",
           "WeightNoiseSource", "drawn_model", "weight_key"]
