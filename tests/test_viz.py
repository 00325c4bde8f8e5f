"""Heatmaps (as the SmoothGrad authors draw them) and the figure grids."""

from __future__ import annotations

import pytest
import torch

from smoothkern.models import mnist_cnn
from smoothkern.viz import (
    aggregate_figure,
    attribution_grid,
    heatmap,
    noise_kind_figure,
    noise_level_figure,
    sample_count_figure,
)


def test_abs_heatmap_sums_channels_and_saturates_at_the_percentile():
    a = torch.zeros(2, 3, 10, 10)
    a[0, 0] = torch.arange(100.0).view(10, 10)
    a[0, 1] = -torch.arange(100.0).view(10, 10)         # |.| summed: sign cancels nothing
    h = heatmap(a)
    assert h.shape == (2, 10, 10)
    assert 0 <= h.min() and h.max() == 1
    q = torch.quantile(2 * torch.arange(100.0), 0.99)
    torch.testing.assert_close(h[0, 5, 0], torch.tensor(100.0 / q.item()))
    assert h[0, 9, 9] == 1 and h[0, 0, 0] == 0
    assert (h[1] == 0).all()                              # a flat map stays 0, no NaN
    assert heatmap(a[0]).shape == (10, 10)


def test_signed_heatmap_keeps_the_sign():
    a = torch.linspace(-1, 1, 100).view(1, 1, 10, 10)
    h = heatmap(a, signed=True)
    assert -1 <= h.min() < 0 < h.max() <= 1
    assert torch.equal(torch.sign(h), torch.sign(a[:, 0]))
    with pytest.raises(ValueError, match="percentile"):
        heatmap(a, percentile=0)


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    return mnist_cnn(width=4, hidden=8), torch.rand(2, 1, 28, 28)


def _check_png(path, fig, rows, cols):
    from PIL import Image

    assert len(fig.axes) == rows * cols
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_noise_level_figure(tmp_path, model_and_images):
    model, x = model_and_images
    fig = noise_level_figure(model, x, noise_levels=(0, 0.1, 0.3), n_samples=2,
                             row_labels=["a", "b"], title="t", out=tmp_path / "n.png")
    _check_png(tmp_path / "n.png", fig, 2, 4)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["input", "σ = 0 (no noise)", "σ = 10%",
                                                       "σ = 30%"]


def test_other_figures(tmp_path, model_and_images):
    model, x = model_and_images
    fig = sample_count_figure(model, x, counts=(1, 3), out=tmp_path / "s.png")
    _check_png(tmp_path / "s.png", fig, 2, 3)
    fig = noise_kind_figure(model, x, noise_levels=(0.1,), n_samples=2, out=tmp_path / "k.png")
    _check_png(tmp_path / "k.png", fig, 2, 3)
    fig = aggregate_figure(model, x, n_samples=2, signed=True, out=tmp_path / "a.png")
    _check_png(tmp_path / "a.png", fig, 2, 6)


def test_grid_checks_titles():
    with pytest.raises(ValueError, match="titles"):
        attribution_grid(torch.rand(1, 3, 8, 8), [torch.rand(1, 3, 8, 8)], [])
