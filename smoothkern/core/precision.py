"""Reduced precision for the model passes: ``compute_dtype`` and what the hardware offers.

The model's forward and backward run under ``torch.autocast`` in bfloat16 or float16; the noise,
the inputs the gradient is taken for, the statistics and the results stay float32. The accuracy
contract (tested on the bundled digits CNN and a CIFAR ResNet18): at the same seed and m, the
reduced-precision map differs from the float32 map, in relative L2, by at most a quarter of the
difference between two float32 seeds: the precision error stays well below the Monte-Carlo
error the user already accepts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

COMPUTE_DTYPES = (torch.bfloat16, torch.float16)


def check_compute_dtype(dtype: object) -> torch.dtype | None:
    """None (float32 passes) or one of :data:`COMPUTE_DTYPES`."""
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in COMPUTE_DTYPES:
        raise TypeError(f"compute_dtype must be None, torch.bfloat16 or torch.float16, got "
                        f"{dtype!r}")
    return dtype  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None,
             cache_enabled: bool = True) -> Iterator[None]:
    """``torch.autocast`` on ``device`` in ``dtype``; nothing when ``dtype`` is None.

    ``cache_enabled=False`` inside a CUDA graph capture (cached weight casts would outlive it).
    """
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled):
        yield


def fast_reduced_precision(device: torch.device | str = "cpu") -> dict[str, str]:
    """What torch reports about fast bf16/fp16 arithmetic on ``device``.

    Returns:
        ``{"bfloat16": reason, "float16": reason}``: each reason starts with "fast" when the
        hardware has native support, else says why the passes will likely be slower than
        float32 (autocast then emulates the dtype).
    """
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        # sm_80+ (Ampere on): torch.cuda.is_bf16_supported() asks the current device and
        # counts emulation, so it says yes on a V100 too
        bf16 = ("fast: tensor cores" if major >= 8
                else f"slow: {name} (sm_{major}{minor}) has no bf16 tensor cores")
        fp16 = ("fast: tensor cores" if major >= 7
                else f"slow: {name} (sm_{major}{minor}) has no fp16 tensor cores")
        return {"bfloat16": bf16, "float16": fp16}
    cpu = torch.cpu
    has_bf16 = _reported(cpu, "_is_avx512_bf16_supported") or _reported(
        cpu, "_is_amx_tile_supported")
    has_fp16 = _reported(cpu, "_is_amx_fp16_supported")
    return {
        "bfloat16": "fast: AVX-512 BF16 / AMX" if has_bf16 else
        "slow: this CPU reports no AVX-512 BF16 or AMX; bf16 passes are emulated",
        "float16": "fast: AMX-FP16" if has_fp16 else
        "slow: this CPU reports no AMX-FP16; fp16 passes are emulated (use bfloat16)",
    }


def _reported(module: object, name: str) -> bool:
    probe = getattr(module, name, None)
    try:
        return bool(probe()) if callable(probe) else False
    except RuntimeError:
        return False
