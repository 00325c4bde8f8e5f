"""Explanations put to the test, batched.

- Robustness (:mod:`.robustness`): ``sensitivity_max``, ``avg_sensitivity`` and ``infidelity``
  with Captum's signatures and numbers; smoothkern explainers run as one batched job.
- Faithfulness (:mod:`.faithfulness`): deletion and insertion curves (pixel flipping, region
  perturbation) in batched forward-only passes, and their areas.
- Sanity checks (:mod:`.randomization`): cascading and independent model randomisation, with
  the similarity measures of :mod:`.similarity` and the figures of :mod:`.figures`.
"""

from __future__ import annotations

from .. import api as _api  # noqa: F401 - randomization imports smooth_grad: the API goes first
from .faithfulness import (
    PerturbationCurve,
    curve_auc,
    deletion_curve,
    insertion_curve,
    perturbation_curve,
)
from .figures import (
    perturbation_curve_figure,
    randomization_figure,
    randomization_similarity_figure,
)
from .randomization import (
    RandomizationResult,
    layer_seed,
    model_randomization,
    randomization_layers,
    reinitialize,
)
from .robustness import (
    MetricArgumentError,
    avg_sensitivity,
    default_perturb_func,
    infidelity,
    infidelity_perturb_func_decorator,
    sensitivity_max,
)
from .similarity import map_similarity, spearman, ssim, top_k_overlap

__all__ = ["MetricArgumentError", "PerturbationCurve", "RandomizationResult", "avg_sensitivity",
           "curve_auc", "default_perturb_func", "deletion_curve", "infidelity",
           "infidelity_perturb_func_decorator", "insertion_curve", "layer_seed", "map_similarity",
           "model_randomization", "perturbation_curve", "perturbation_curve_figure",
           "randomization_figure", "randomization_layers", "randomization_similarity_figure",
           "reinitialize", "sensitivity_max", "spearman", "ssim", "top_k_overlap"]
