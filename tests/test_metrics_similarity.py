"""map_similarity on broken maps: a NaN in a map gives NaN for that example, never a plausible
number (a randomisation check of a broken explainer must not report finite curves)."""

from __future__ import annotations

import pytest
import torch

from smoothkern.metrics.similarity import SIMILARITIES, map_similarity


@pytest.mark.parametrize("broken", ["original", "other", "both", "one_pixel"])
def test_nan_maps_give_nan_for_their_examples_only(broken):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, 9, 9, generator=gen)
    b = a + 0.3 * torch.randn(3, 2, 9, 9, generator=gen)
    clean = map_similarity(a, b)
    if broken == "one_pixel":
        a[1, 0, 4, 4] = float("nan")
    else:
        if broken in ("original", "both"):
            a[1] = float("nan")
        if broken in ("other", "both"):
            b[1] = float("nan")
    got = map_similarity(a, b)
    assert set(got) == {m + s for m in SIMILARITIES for s in ("", "_abs")}
    for name, value in got.items():
        assert value.shape == (3,) and torch.isnan(value[1]), name
        torch.testing.assert_close(value[[0, 2]], clean[name][[0, 2]])   # the others untouched


def test_all_nan_maps_give_all_nan():
    nan = torch.full((2, 1, 8, 8), float("nan"))
    for name, value in map_similarity(nan, nan.clone(), measures=("spearman", "top_k")).items():
        assert torch.isnan(value).all(), name
