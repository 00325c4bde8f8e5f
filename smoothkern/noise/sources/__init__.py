"""Noise sources: what the engine perturbs, and how.

A source hands the engine the noisy rows of samples ``start .. start+count-1`` of every example
(a :class:`Chunk`). Counter-based input noise (:class:`CounterNoise`) is the default; drawn
baselines (:class:`DrawnBaselines`) wrap another source and add a per-row baseline for the
method; the Captum drop-in adds a replay of Captum's own draws
(:class:`smoothkern.captum.replay.CaptumReplay`). A new source is a module here, not a change to
the engine's chunk loop.
"""

from __future__ import annotations

from .base import Chunk, NoiseSource
from .baselines import DrawnBaselines
from .counter import CounterNoise

__all__ = ["Chunk", "CounterNoise", "DrawnBaselines", "NoiseSource"]
