"""Attribution maps for whole data sets, into a resumable zarr store, on one process or many
(torch.distributed, e.g. under ``torchrun``). See docs/dataset.md."""

from __future__ import annotations

from .distributed import init_distributed
from .drawing import show
from .run import DatasetRun, attribute_dataset, open_store
from .store import StoreError

__all__ = ["DatasetRun", "StoreError", "attribute_dataset", "init_distributed", "open_store",
           "show"]
