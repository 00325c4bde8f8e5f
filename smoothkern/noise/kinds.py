"""The noise kinds of the input noise: one enum, one parser, one error text.

A kind names the distribution of the standard draw ``z`` (see :mod:`smoothkern.noise.philox`):
``gaussian`` (Box-Muller) or ``uniform`` (half-width √3, unit variance). Python code passes the
enum or its name; the compiled ops take :attr:`NoiseKind.code`, an int that equals the C++
``enum class NoiseKind`` (``csrc/philox.h``) and the Triton kernel's ``NOISE`` constexpr.
"""

from __future__ import annotations

import enum
from typing import Any


class OpChoice(str, enum.Enum):
    """A choice the compiled ops take as an int: string-valued (``kind == "gaussian"`` holds,
    and it prints as its name), with :attr:`code` its position in the enum, which the C++,
    CUDA and Triton kernels read. Subclasses list their members in code order."""

    @property
    def code(self) -> int:
        """The member as the ops' integer argument (its position in the enum)."""
        return list(type(self)).index(self)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: Any, what: str) -> OpChoice:
        """``value`` as a member: the member itself or its name.

        Raises:
            ValueError: anything else, naming ``what`` and the choices.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ValueError(f"unknown {what} {value!r}; choose one of "
                         f"{tuple(m.value for m in cls)}")


class NoiseKind(OpChoice):
    """The distribution of the standard draw (codes 0 gaussian, 1 uniform)."""

    GAUSSIAN = "gaussian"
    UNIFORM = "uniform"


NOISE_KIND_NAMES = tuple(kind.value for kind in NoiseKind)


def parse_noise_kind(noise: NoiseKind | str) -> NoiseKind:
    """``noise`` as a :class:`NoiseKind`: the enum itself or its name ("gaussian", "uniform").

    Raises:
        ValueError: anything else.
    """
    return NoiseKind.parse(noise, "noise")
