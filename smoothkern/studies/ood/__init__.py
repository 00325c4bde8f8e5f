"""The out-of-distribution study on digits: shifted test sets, clean vs AugMix training, and
SmoothGrad maps under each shift (``smoothkern ood``).

Names load on first use, so that building the command-line parser stays light.
"""

from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS = {
    "BatchAugMix": "augment", "augmix_jsd_loss": "augment", "jensen_shannon": "augment",
    "rgb_digits_cnn": "model",
    "OPTIMISER": "training", "TrainSettings": "training", "train_model": "training",
    "train_trial": "training",
    "StudyData": "study", "StudyResult": "study", "load_study_data": "study",
    "run_study": "study",
    "shift_maps_figure": "figure", "smoothgrad_maps": "figure",
    "stroke_masks": "stroke", "stroke_share": "stroke", "stroke_share_table": "stroke",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
