"""Interleaved timing: the median of each variant, the variants taking turns."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int,
                        sync: Callable[[], None] = lambda: None,
                        warm_up: bool = True) -> dict[str, float]:
    """Median wall time of each variant, running them in turn within each repeat.

    Interleaving makes a slow phase of a noisy machine hit every variant alike, so ratios
    inside one run are trustworthy even when absolute times drift.

    Args:
        warm_up: call every variant once, untimed, first (allocator, lazy init, kernel builds).
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    if warm_up:
        for fn in variants.values():
            fn()
        sync()
    names = list(variants)
    for r in range(repeats):
        # Rotate the order each repeat: a variant's cost can leak into the next one (allocator,
        # caches, thread pools), so no variant should always follow the same neighbour.
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = variants[name]
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
