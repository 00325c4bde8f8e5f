"""Figures (matplotlib, drawn off-screen with Agg): heatmaps and the assignment's grids."""

from __future__ import annotations

from .figures import (
    AGGREGATES,
    NOISE_KINDS,
    NOISE_LEVELS,
    SAMPLE_COUNTS,
    aggregate_figure,
    noise_kind_figure,
    noise_level_figure,
    noise_level_titles,
    predicted_labels,
    sample_count_figure,
)
from .grid import attribution_grid, save_figure
from .heatmap import heatmap

__all__ = ["AGGREGATES", "NOISE_KINDS", "NOISE_LEVELS", "SAMPLE_COUNTS", "aggregate_figure",
           "attribution_grid", "heatmap", "noise_kind_figure", "noise_level_figure",
           "noise_level_titles", "predicted_labels", "sample_count_figure", "save_figure"]
