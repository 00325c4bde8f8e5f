"""A Captum-compatible drop-in: change ``from captum.attr import ...`` to
``from smoothkern.captum import ...`` and NoiseTunnel runs on smoothkern's batched engine."""

from __future__ import annotations

from .attributions import (
                           Attribution,
                           GuidedBackprop,
                           GuidedGradCam,
                           InputXGradient,
                           IntegratedGradients,
                           LayerGradCam,
                           Saliency,
)
from .noise_tunnel import NoiseTunnel

__all__ = ["Attribution", "GuidedBackprop", "GuidedGradCam", "InputXGradient",
           "IntegratedGradients", "LayerGradCam", "NoiseTunnel", "Saliency"]
