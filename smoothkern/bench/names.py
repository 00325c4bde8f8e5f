"""The benchmark's row names and defaults, without torch: the command line's ``--help`` and
choices read them here."""

from __future__ import annotations

VARIANTS = ("loop", "smoothkern", "smoothkern-bf16", "smoothkern-fp16", "captum", "captum-bs10")
LABELS = {"loop": "loop (m sequential passes)", "smoothkern": "smoothkern fp32",
          "smoothkern-bf16": "smoothkern bf16", "smoothkern-fp16": "smoothkern fp16",
          "captum": "Captum NoiseTunnel (default)", "captum-bs10": "Captum NoiseTunnel bs=10"}
DEFAULT_SAMPLES = 50  # noise samples m of ``smoothkern bench`` (10 with --quick)
CAPTUM_CHUNK = 10  # nt_samples_batch_size of the "best-chunked" Captum row (issue 10's tables)
