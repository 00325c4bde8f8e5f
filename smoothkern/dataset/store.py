"""The zarr store of a data-set job: maps, targets, labels, completion records, statistics.

Layout (a zarr v3 group on a local or shared file system)::

    <aggregate>        [N, (P,) (S,) *map]  float32/float16 maps, one array per aggregate
                                            ("count": int32 [N, (P,)]); NaN until written
    target, label      [N] int64            the class explained; the data's label (-1: none)
    input              [N, *x]              the inputs (only with store_inputs=True)
    complete           [chunks] uint8       1 once every array's chunk is written
    stats/class_count  [K] int64            examples per class explained
    stats/<aggregate>/<stat>        [(P,) (S,) *map]     over all examples
    stats/<aggregate>/class_<stat>  [K, (P,) (S,) *map]  per class explained
    attrs["smoothkern"]  the job (options, model and data fingerprints), the layout, versions

Every array is chunked along N by the same ``chunk_size`` and each record of ``complete`` is a
chunk of its own, so ranks that compute different chunks never write the same zarr chunk, and a
chunk is marked complete only after its data (zarr writes each chunk file atomically): a process
killed in between leaves the chunk to be redone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .job import differences, plain

FORMAT = 1
ATTRS = "smoothkern"
INSTALL_HINT = "pip install 'smoothkern[dataset]' (or: pip install 'zarr>=3')"


class StoreError(ValueError):
    """The store cannot be used for this job (another job's, not a store, exists already)."""


def zarr_module():
    """zarr (imported only when a data-set job runs), with the extra to install if missing."""
    try:
        import zarr
    except ImportError:
        raise ImportError(f"data-set stores need zarr 3: {INSTALL_HINT}") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ImportError(f"data-set stores need zarr 3, found {zarr.__version__}: "
                          f"{INSTALL_HINT}")
    return zarr


class Store:
    """An open store (see the module docstring for its layout)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.record = dict(group.attrs[ATTRS])
        layout = self.record["layout"]
        self.n_examples = int(layout["examples"])
        self.chunk_size = int(layout["chunk_size"])
        self.n_chunks = -(-self.n_examples // self.chunk_size)
        self.aggregates = list(layout["arrays"])

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike, writable: bool = True) -> Store:
        """An existing smoothkern store.

        Raises:
            StoreError: the path is missing or is not a smoothkern data-set store.
        """
        group = _open_group(Path(path), "r+" if writable else "r")
        if group is None or ATTRS not in group.attrs or "layout" not in group.attrs[ATTRS]:
            raise StoreError(f"{path} is not a smoothkern data-set store")
        return cls(group)

    @classmethod
    def prepare(cls, path: str | os.PathLike, job: Mapping[str, Any], layout: Mapping[str, Any],
                info: Mapping[str, Any], *, resume: bool, overwrite: bool) -> Store:
        """The store to write ``job`` into: created, replaced (``overwrite``), or an existing
        one of the same job to continue (``resume``).

        Args:
            job: the identity record (:func:`smoothkern.dataset.job.identity`).
            layout: examples, chunk_size, classes, and ``arrays``: {name: {"shape", "dtype"}},
                shapes without the N dim.
            info: recorded, not compared (versions, run options, metadata).

        Raises:
            StoreError: another job's store, a path that is not a store, an existing store with
                neither ``resume`` nor ``overwrite``, a different chunk size.
        """
        path = Path(path).expanduser()
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} exists and is not a folder")
        empty = not path.exists() or not any(path.iterdir())
        if not empty:
            group = _open_group(path, "r")
            ours = group is not None and ATTRS in group.attrs and "job" in group.attrs[ATTRS]
            if not ours:
                raise StoreError(f"{path} exists and is not a smoothkern data-set store; "
                                 "choose another output path")
            if overwrite:
                shutil.rmtree(path)
            elif not resume:
                raise StoreError(f"{path} already holds a data-set store; resume it "
                                 "(resume=True, --resume) or replace it (overwrite=True, "
                                 "--overwrite)")
            else:
                store = cls(zarr_module().open_group(path, mode="r+"))
                store.check_same_job(job, layout)
                return store
        return cls._create(path, job, layout, info)

    @classmethod
    def _create(cls, path: Path, job: Mapping[str, Any], layout: Mapping[str, Any],
                info: Mapping[str, Any]) -> Store:
        zarr = zarr_module()
        group = zarr.open_group(path, mode="w")
        n, chunk = int(layout["examples"]), int(layout["chunk_size"])
        for name, spec in layout["arrays"].items():
            shape = tuple(spec["shape"])
            dtype = spec["dtype"]
            fill = -1 if dtype.startswith("int") else float("nan")
            group.create_array(name, shape=(n, *shape), chunks=(chunk, *shape), dtype=dtype,
                               fill_value=fill)
        for name in ("target", "label"):
            group.create_array(name, shape=(n,), chunks=(chunk,), dtype="int64", fill_value=-1)
        if layout.get("input_shape") is not None:
            shape = tuple(layout["input_shape"])
            group.create_array("input", shape=(n, *shape), chunks=(chunk, *shape),
                               dtype="float32", fill_value=float("nan"))
        # One chunk per record, stored raw: each rank's marks are files of their own.
        group.create_array("complete", shape=(-(-n // chunk),), chunks=(1,), dtype="uint8",
                           fill_value=0, compressors=None)
        group.attrs[ATTRS] = plain({"format": FORMAT, "job": dict(job), "layout": dict(layout),
                                    "finished": False, **info})
        return cls(group)

    def check_same_job(self, job: Mapping[str, Any], layout: Mapping[str, Any]) -> None:
        """Refuses a store written by another job (other options, model, data or layout)."""
        stored = self.record
        if stored.get("format") != FORMAT:
            raise StoreError(f"the store has format {stored.get('format')}, this smoothkern "
                             f"writes format {FORMAT}")
        diff = differences(stored["job"], plain(dict(job)))
        wanted_layout = plain(dict(layout))
        if not diff:  # the layout follows from the job: its differences only when the job's agree
            diff = [d for d in differences(stored["layout"], wanted_layout)
                    if not d.startswith("chunk_size")]
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise StoreError(f"the store holds another job ({shown}); write to another path or "
                             "replace it (overwrite=True, --overwrite)")

    # ------------------------------------------------------------------ chunks

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.n_examples)

    def complete(self) -> np.ndarray:
        """bool[chunks]: which chunks are written in full."""
        return np.asarray(self.group["complete"][:]) == 1

    def write_chunk(self, chunk: int, maps: Mapping[str, torch.Tensor], target: torch.Tensor,
                    label: torch.Tensor, inputs: torch.Tensor | None = None) -> None:
        """Writes one chunk's arrays, then marks it complete."""
        start, stop = self.chunk_range(chunk)
        for name, values in maps.items():
            array = self.group[name]
            array[start:stop] = values.detach().cpu().numpy().astype(array.dtype, copy=False)
        self.group["target"][start:stop] = target.cpu().numpy()
        self.group["label"][start:stop] = label.cpu().numpy()
        if inputs is not None and "input" in self.group:
            self.group["input"][start:stop] = inputs.detach().to("cpu", torch.float32).numpy()
        self.mark_complete(chunk)

    def mark_complete(self, chunk: int) -> None:
        self.group["complete"][chunk] = 1

    def read(self, name: str, chunk: int) -> torch.Tensor:
        start, stop = self.chunk_range(chunk)
        return torch.from_numpy(np.asarray(self.group[name][start:stop]))

    # ------------------------------------------------------------------ statistics

    def write_statistics(self, name: str, values: Mapping[str, torch.Tensor],
                         class_count: torch.Tensor) -> None:
        """Stores ``stats/<name>/<stat>`` (float32) and ``stats/class_count``."""
        for stat, value in values.items():
            data = value.to(torch.float32).numpy()
            self.group.create_array(f"stats/{name}/{stat}", shape=data.shape, dtype="float32",
                                    chunks=data.shape or None, overwrite=True)[...] = data
        counts = class_count.numpy()
        self.group.create_array("stats/class_count", shape=counts.shape, dtype="int64",
                                overwrite=True)[...] = counts

    def finish(self, **record: Any) -> None:
        """Marks the job finished (after its statistics are stored)."""
        self.record.update(plain(record), finished=True)
        self.group.attrs[ATTRS] = self.record

    @property
    def finished(self) -> bool:
        return bool(self.record.get("finished"))


def _open_group(path: Path, mode: str):
    """The zarr group at ``path``, or None if there is none."""
    zarr = zarr_module()
    if not path.is_dir():
        return None
    try:
        return zarr.open_group(path, mode=mode)
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        return None
    except Exception as err:  # noqa: BLE001 - zarr raises its own types for foreign folders
        if type(err).__module__.startswith("zarr"):
            return None
        raise
