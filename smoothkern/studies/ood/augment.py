"""AugMix for digit batches (torchvision's ``transforms.AugMix``) and the paper's
Jensen–Shannon consistency loss.

torchvision's AugMix draws one chain of operations per call for the whole tensor it is given,
so :class:`BatchAugMix` calls it once per image, as the paper augments each image on its own.
It takes uint8 pixels; the batch is converted to 0..255 and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The AugMix paper's weight of the consistency term (λ = 12).
JSD_WEIGHT = 12.0


class BatchAugMix:
    """AugMix on every image of a batch, with its own random chains.

    Args:
        severity, mixture_width, chain_depth, alpha: torchvision's AugMix settings (defaults:
            the paper's 3, 3, 1-3 ops, α = 1).
        all_ops: False (default) leaves out the operations that overlap the test corruptions
            (contrast, colour, brightness, sharpness), as the paper does; fog lowers contrast.

    Randomness comes from torch's global generator (torchvision draws from it): seed it, or run
    under ``torch.random.fork_rng()``, for repeatable augmentations.
    """

    def __init__(self, severity: int = 3, mixture_width: int = 3, chain_depth: int = -1,
                 alpha: float = 1.0, all_ops: bool = False) -> None:
        from torchvision.transforms import AugMix

        self.augmix = AugMix(severity=severity, mixture_width=mixture_width,
                             chain_depth=chain_depth, alpha=alpha, all_ops=all_ops)

    def __call__(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C, H, W]) in [0, 1] → an augmented copy, Tensor[B, C, H, W] in [0, 1].

        Gray images replicated to three channels are augmented once and replicated again (the
        operations act on every channel alike, so the result is the same, for a third of the work).
        """
        if x.dim() != 4:
            raise ValueError(f"expected images [B, C, H, W], got {tuple(x.shape)}")
        gray = x.shape[1] == 3 and bool((x[:, :1] == x[:, 1:]).all())
        source = x[:, :1] if gray else x
        pixels = (source.detach() * 255).round_().clamp_(0, 255).to(torch.uint8)
        # One thread: the ops are tiny, and thread hand-offs cost more than they save
        # (benchmarks/RESULTS.md, the out-of-distribution study).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            mixed = torch.stack([self.augmix(image) for image in pixels])
        finally:
            torch.set_num_threads(threads)
        out = mixed.to(x.dtype) / 255
        return out.expand(-1, 3, -1, -1).contiguous() if gray else out

    def __repr__(self) -> str:
        return f"BatchAugMix({self.augmix!r})"


def jensen_shannon(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor) -> Tensor:
    """The AugMix paper's consistency term: JS(p_clean, p_aug1, p_aug2) over the batch.

    Args:
        logits_* (Tensor[B, classes]): the model's outputs on the clean image and two AugMix
            views of it.

    Returns:
        A scalar: the mean over three of KL(p_i ‖ M), M the mixture of the three, averaged over
        the batch (M clamped away from 0 for the logarithm, as the paper's code does).
    """
    probs = [F.softmax(z, dim=1) for z in (logits_clean, logits_aug1, logits_aug2)]
    log_mixture = torch.clamp(sum(probs) / 3, 1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / 3


def augmix_jsd_loss(logits_clean: Tensor, logits_aug1: Tensor, logits_aug2: Tensor,
                    labels: Tensor, weight: float = JSD_WEIGHT) -> Tensor:
    """Cross-entropy on the clean images + ``weight`` × :func:`jensen_shannon` (a scalar)."""
    return F.cross_entropy(logits_clean, labels) + weight * jensen_shannon(
        logits_clean, logits_aug1, logits_aug2)
