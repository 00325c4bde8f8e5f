"""The noise kinds of the input noise: one enum, one parser, one error text.

A kind names the distribution of the standard draw ``z`` (see :mod:`smoothkern.noise.philox`):
``gaussian`` (Box-Muller) or ``uniform`` (half-width √3, unit variance). Python code passes the
enum or its name; the compiled ops take :attr:`NoiseKind.code`, an int that equals the C++
``enum class NoiseKind`` (``csrc/philox.h``) and the Triton kernel's ``NOISE`` constexpr.
"""

from __future__ import annotations

import enum


class NoiseKind(str, enum.Enum):
    """The distribution of the standard draw. String-valued, so ``kind == "gaussian"`` holds."""

    GAUSSIAN = "gaussian"
    UNIFORM = "uniform"

    @property
    def code(self) -> int:
        """The kind as the ops' integer argument (0 gaussian, 1 uniform)."""
        return _CODES[self]

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


_CODES = {NoiseKind.GAUSSIAN: 0, NoiseKind.UNIFORM: 1}
NOISE_KIND_NAMES = tuple(kind.value for kind in NoiseKind)


def parse_noise_kind(noise: NoiseKind | str) -> NoiseKind:
    """``noise`` as a :class:`NoiseKind`: the enum itself or its name ("gaussian", "uniform").

    Raises:
        ValueError: anything else.
    """
    if isinstance(noise, NoiseKind):
        return noise
    if isinstance(noise, str):
        try:
            return NoiseKind(noise)
        except ValueError:
            pass
    raise ValueError(f"unknown noise {noise!r}; choose one of {NOISE_KIND_NAMES}")
