"""Loading local weight files into a network, with errors that say what went wrong."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

# Keys under which training scripts commonly nest the state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
# Prefixes added by DataParallel/DDP, torch.compile, or by saving a Normalized wrapper.
_PREFIXES = ("module.", "_orig_mod.", "net.", "model.")


class WeightsError(ValueError):
    """A weight file is missing, unreadable or does not fit the architecture."""


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Reads a state dict from a local file, unwrapping the usual containers.

    Accepts a bare state dict, ``{"state_dict" | "net" | "model" | ...: state_dict}`` and a whole
    pickled ``nn.Module``.

    Raises:
        WeightsError: the file is missing, not a torch file, or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a readable weights file"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"cannot read weights file {path}: {detail}") from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in _WRAPPER_KEYS:
            if key in obj:
                return _unwrap(obj[key], path)
    raise WeightsError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                       f"one of the keys {_WRAPPER_KEYS})")


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Removes prefixes that every key shares (``module.``, ``_orig_mod.``, ``net.``)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_weights(net: nn.Module, path: str | os.PathLike,
                 rename: Callable[[str], str] | None = None) -> nn.Module:
    """Loads a local weight file into ``net`` strictly (every key, every shape).

    Args:
        net: the bare network (no ``Normalize`` in front).
        path: a file written by ``torch.save``.
        rename: maps a checkpoint key onto ``net``'s naming, tried when the keys do not match
            as they are (another repository's layout of the same architecture).

    Returns:
        ``net``, with the weights loaded.

    Raises:
        WeightsError: missing file, unreadable file, or keys/shapes that do not fit.
    """
    raw = read_state_dict(path)
    expected = net.state_dict()
    # The candidate closest to the expected keys wins (the keys as stored on a tie).
    candidates = [raw, strip_prefixes(raw)]
    if rename is not None:
        candidates += [{rename(k): v for k, v in c.items()} for c in candidates]
    state = min(candidates, key=lambda c: len(set(c) ^ set(expected)))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    # BatchNorm's counter is bookkeeping only; old checkpoints lack it.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit {type(net).__name__}: "
                           f"{_few(missing, 'missing')}{'; ' if missing and unexpected else ''}"
                           f"{_few(unexpected, 'unexpected')}")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if wrong:
        raise WeightsError(f"{path} does not fit {type(net).__name__}: shapes differ for "
                           f"{', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")
    net.load_state_dict(state, strict=False)
    return net


def _few(keys: list[str], what: str) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:4]) + (f" ... ({len(keys)} in all)" if len(keys) > 4 else "")
    return f"{what} keys {shown}"
