"""Input optimisation, batched: fooling images and class visualisation (the assignment's
recipes), on the package's input-gradient path.

    result = fooling_images(model, images, targets)          # until each image is fooled
    result.images, result.steps, result.success, result.magnified
    vis = class_visualization(model, range(10), image_shape=(1, 28, 28), **DIGITS_RECIPE)
    vis.images, vis.initial_scores, vis.final_scores

Both work in the model's normalised input units (read from a leading ``Normalize`` module, as
smoothkern's model wrappers have) and return pixels clamped to the valid range. The caller's
model comes back unchanged. See docs/optimize.md.
"""

from __future__ import annotations

from .figures import class_visualization_figure, fooling_figure
from .fooling import FoolingResult, fooling_images
from .regularize import gaussian_blur, roll_images
from .space import InputSpace, input_space
from .visualization import CS231N_RECIPE, DIGITS_RECIPE, ClassVisualization, class_visualization

__all__ = ["CS231N_RECIPE", "DIGITS_RECIPE", "ClassVisualization", "FoolingResult", "InputSpace",
           "class_visualization", "class_visualization_figure", "fooling_figure",
           "fooling_images", "gaussian_blur", "input_space", "roll_images"]
