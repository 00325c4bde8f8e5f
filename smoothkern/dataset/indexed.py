"""The caller's data as indexed examples: a map-style Dataset, or the Dataset behind a DataLoader.

Example k must be the k-th item whoever reads it, so a DataLoader is taken apart (its dataset,
collate function and workers) and read again in chunk order; a shuffling sampler or an
IterableDataset, which have no stable k-th item, are refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
)
from torch.utils.data.dataloader import default_collate

NO_LABEL = -1
PREFETCH_BATCHES = 4  # batches each worker decodes ahead (torch's default is 2)


@dataclass
class IndexedData:
    """Examples by index, read in batches.

    Attributes:
        dataset: a map-style dataset; items ``x`` or ``(x, label, ...)``.
        collate: turns a list of items into a batch.
        num_workers: DataLoader worker processes.
        batch_size: examples per batch (the DataLoader's, when one was given and no
            ``batch_size`` was).
    """

    dataset: Dataset
    collate: Callable[[list], Any]
    num_workers: int
    batch_size: int

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, batches: Sequence[Sequence[int]], pin_memory: bool = False
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(x Tensor[b, ...], label LongTensor[b])`` for each list of indices, in order
        (labels are ``NO_LABEL`` where items carry none).

        One DataLoader reads them all: give it every batch of a run (all of a rank's chunks),
        so that its workers start once and decode ahead (``prefetch_factor`` batches each)
        across chunk boundaries. ``pin_memory`` for copies to a GPU.
        """
        extra = {"prefetch_factor": PREFETCH_BATCHES} if self.num_workers > 0 else {}
        loader = DataLoader(self.dataset, batch_sampler=[list(b) for b in batches],
                            collate_fn=self.collate, num_workers=self.num_workers,
                            pin_memory=pin_memory, **extra)
        for indices, batch in zip(batches, loader):
            yield split_batch(batch, len(indices))

    def example(self, index: int) -> tuple[Tensor, Tensor]:
        """One example as a batch of one: ``(x Tensor[1, ...], label LongTensor[1])``."""
        return split_batch(self.collate([self.dataset[index]]), 1)


def indexed_data(data: Dataset | DataLoader, batch_size: int | None,
                 num_workers: int | None) -> IndexedData:
    """Checks ``data`` and returns it as :class:`IndexedData`.

    Raises:
        TypeError: not a Dataset/DataLoader, an IterableDataset, or a dataset without len().
        ValueError: a DataLoader that shuffles or samples, or an empty dataset.
    """
    collate: Callable[[list], Any] = default_collate
    workers = 0
    if isinstance(data, DataLoader):
        if isinstance(data.dataset, IterableDataset):
            raise TypeError("the DataLoader reads an IterableDataset: a data-set job needs "
                            "examples by index (a map-style Dataset)")
        if not isinstance(data.sampler, SequentialSampler) or (
                data.batch_sampler is not None and type(data.batch_sampler) is not BatchSampler):
            raise ValueError("the DataLoader shuffles or uses a custom sampler; example k must "
                             "be the k-th item of the dataset (pass the dataset, or a "
                             "DataLoader with shuffle=False)")
        collate, workers = data.collate_fn, data.num_workers
        batch_size = batch_size if batch_size is not None else data.batch_size
        data = data.dataset
    if isinstance(data, IterableDataset):
        raise TypeError("an IterableDataset has no k-th item; a data-set job needs a map-style "
                        "Dataset (__getitem__ and __len__)")
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(f"data must be a torch Dataset (with __getitem__ and __len__) or a "
                        f"DataLoader, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the dataset is empty")
    batch_size = 32 if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    workers = workers if num_workers is None else num_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {workers!r}")
    return IndexedData(data, collate, workers, batch_size)


def split_batch(batch: Any, size: int) -> tuple[Tensor, Tensor]:
    """A collated batch → ``(x Tensor[size, ...], label LongTensor[size])``."""
    labels = None
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise TypeError("a data item is an empty tuple; expected x or (x, label)")
        x = batch[0]
        labels = batch[1] if len(batch) > 1 else None
    else:
        x = batch
    if not isinstance(x, Tensor) or not x.is_floating_point():
        what = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"data items must be x or (x, label) with x a floating-point Tensor; "
                        f"got {what}")
    if x.shape[0] != size:
        raise ValueError(f"a batch of {size} items collated to {x.shape[0]} rows")
    if labels is None:
        return x, torch.full((size,), NO_LABEL, dtype=torch.int64)
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.shape != (size,):
        raise TypeError(f"labels must be one integer per item, got {labels.dtype} "
                        f"{tuple(labels.shape)}")
    return x, labels.to(torch.int64)


def data_fingerprint(data: IndexedData) -> str:
    """A short hash of the number of examples and the first and last examples' values: a store
    refuses to continue with other data (random transforms change it too, and should)."""
    digest = hashlib.sha256(str(len(data)).encode())
    for index in sorted({0, len(data) - 1}):
        x, label = data.example(index)
        digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        digest.update(label.numpy().tobytes())
    return digest.hexdigest()[:16]


def chunk_batches(start: int, stop: int, batch_size: int) -> list[list[int]]:
    """Indices start..stop-1 in batches of at most batch_size (batches never leave a chunk)."""
    return [list(range(b, min(b + batch_size, stop))) for b in range(start, stop, batch_size)]
