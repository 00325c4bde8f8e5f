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
killed in between leaves the chunk to be redone. Every chunk file is written, even one holding
only the fill value, so a chunk's files tell whether it was written: a resumed job recomputes a
chunk marked complete whose files were deleted, and rebuilds a lost ``complete`` record from the
files present.
"""

from __future__ import annotations

import os
import shutil
import warnings
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
    """The store cannot be used for this job (another job's, not a store, exists already,
    damaged)."""


class ChunkDamaged(StoreError):
    """A stored chunk cannot be decoded (a truncated or damaged file).

    Attributes:
        chunks: the chunks read; cause: the decoder's error in a few words.
    """

    def __init__(self, message: str, chunks: list[int], cause: str) -> None:
        super().__init__(message)
        self.chunks, self.cause = chunks, cause


class StoreRepaired(UserWarning):
    """A resumed store had lost chunk files or its ``complete`` record; the chunks concerned
    are computed again."""


# Arrays every store has besides its maps ("complete" is checked on its own: it can be rebuilt).
BASE_ARRAYS = ("target", "label")
# Arrays whose chunk files show that a chunk was written ("label" is left out: stores written
# before every chunk file was kept have no file for a chunk of unlabelled items).
WRITTEN_ARRAYS = ("target",)


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

    def __init__(self, group: Any, path: str | os.PathLike | None = None) -> None:
        self.group = group
        self.path = Path(path) if path is not None else Path(str(group.store.root))
        self.record = dict(group.attrs[ATTRS])
        layout = self.record["layout"]
        self.n_examples = int(layout["examples"])
        self.chunk_size = int(layout["chunk_size"])
        self.n_chunks = -(-self.n_examples // self.chunk_size)
        self.aggregates = list(layout["arrays"])
        missing = [n for n in (*self.aggregates, *BASE_ARRAYS) if n not in group]
        if missing:
            raise StoreError(f"the store {self.path} is damaged: its array(s) "
                             f"{', '.join(missing)} are missing; replace it (overwrite=True, "
                             "--overwrite)")

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
        store = cls(group, path)
        if "complete" not in group:
            raise StoreError(f"the store {path} has lost its 'complete' record: resume the job "
                             "(resume=True, --resume) to rebuild it from the chunk files")
        return store

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
                store = cls(zarr_module().open_group(path, mode="r+"), path)
                store.check_same_job(job, layout)
                store.repair()
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
                               fill_value=fill, config=KEEP_EVERY_CHUNK,
                               compressors=MAP_COMPRESSORS)
        for name in BASE_ARRAYS:
            group.create_array(name, shape=(n,), chunks=(chunk,), dtype="int64", fill_value=-1,
                               config=KEEP_EVERY_CHUNK)
        if layout.get("input_shape") is not None:
            shape = tuple(layout["input_shape"])
            group.create_array("input", shape=(n, *shape), chunks=(chunk, *shape),
                               dtype="float32", fill_value=float("nan"), config=KEEP_EVERY_CHUNK,
                               compressors=MAP_COMPRESSORS)
        _create_complete(group, -(-n // chunk))
        group.attrs[ATTRS] = plain({"format": FORMAT, "job": dict(job), "layout": dict(layout),
                                    "finished": False, **info})
        return cls(group, path)

    def check_same_job(self, job: Mapping[str, Any], layout: Mapping[str, Any]) -> None:
        """Refuses a store written by another job (other options, model, data or layout)."""
        stored = self.record
        if stored.get("format") != FORMAT:
            raise StoreError(f"the store has format {stored.get('format')}, this smoothkern "
                             f"writes format {FORMAT}")
        diff = differences(_canonical(stored["job"]), _canonical(plain(dict(job))))
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

    def forget(self, chunk: int) -> None:
        """Marks a chunk to be computed again (its record only: each is a file of its own)."""
        self.group["complete"][chunk] = 0

    def read(self, name: str, chunk: int) -> torch.Tensor:
        """One chunk of an array.

        Raises:
            StoreError: the chunk's file cannot be decoded (truncated or damaged), saying which
                file to delete so that a resumed job computes the chunk again.
        """
        start, stop = self.chunk_range(chunk)
        return torch.from_numpy(self.read_rows(name, slice(start, stop)))

    def read_rows(self, name: str, rows: slice | list[int]) -> np.ndarray:
        """Rows of an array (a slice, or a list of indices), damaged chunks reported as in
        :meth:`read`."""
        array = self.group[name]
        try:
            if isinstance(rows, slice):
                return np.asarray(array[rows])
            return np.asarray(array.get_orthogonal_selection((rows,)))
        except Exception as err:  # noqa: BLE001 - codecs raise their own types
            indices = range(*rows.indices(self.n_examples)) if isinstance(rows, slice) else rows
            chunks = sorted({i // self.chunk_size for i in indices})
            files = [str(self.chunk_file(name, c)) for c in chunks]
            cause = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            raise ChunkDamaged(
                f"the store's array '{name}' cannot be read in chunk(s) {chunks} ({cause}); "
                f"delete the damaged file ({', '.join(files[:2])}"
                f"{' ...' if len(files) > 2 else ''}) and resume the job (--resume) to compute "
                "it again", chunks, cause) from None

    # ------------------------------------------------------------------ files and repairs

    def chunk_file(self, name: str, chunk: int) -> Path:
        """The file of chunk ``chunk`` of array ``name`` (chunks split N only)."""
        array = self.group[name]
        key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
        return self.path / name / key

    def written(self, chunk: int) -> bool:
        """Whether every file of a chunk is there (maps, targets, inputs)."""
        names = [*self.aggregates, *WRITTEN_ARRAYS] + (["input"] if "input" in self.group
                                                        else [])
        return all(self.chunk_file(name, chunk).is_file() for name in names)

    def repair(self) -> list[str]:
        """Before resuming: rebuilds a lost ``complete`` record from the chunk files present,
        and unmarks chunks marked complete whose files were deleted (they are computed again).
        Returns what was done (also warned as :class:`StoreRepaired`)."""
        notes = []
        if "complete" not in self.group:
            written = [self.written(c) for c in range(self.n_chunks)]
            _create_complete(self.group, self.n_chunks)
            self.group["complete"][:] = np.asarray(written, dtype=np.uint8)
            notes.append(f"the store had lost its 'complete' record: rebuilt from the chunk "
                         f"files ({sum(written)} of {self.n_chunks} chunks written)")
        else:
            lost = [c for c in np.flatnonzero(self.complete()).tolist() if not self.written(c)]
            for c in lost:
                self.group["complete"][c] = 0
            if lost:
                notes.append(f"{len(lost)} chunk(s) marked complete had lost files "
                             f"({lost[:5]}{' ...' if len(lost) > 5 else ''}): computed again")
        if notes and self.finished:
            self.record["finished"] = False
            self.group.attrs[ATTRS] = self.record
        for note in notes:
            warnings.warn(f"{self.path}: {note}", StoreRepaired, stacklevel=2)
        return notes

    def stored_statistics(self) -> set[str]:
        """The statistics stored for every element-wise map (empty when there are none)."""
        from ..core.stats import AGGREGATES, PER_EXAMPLE_AGGREGATES

        maps = [a for a in self.aggregates if a not in PER_EXAMPLE_AGGREGATES]
        return {stat for stat in AGGREGATES
                if maps and all(f"stats/{a}/class_{stat}" in self.group for a in maps)}

    # ------------------------------------------------------------------ statistics

    def write_statistics(self, name: str, stats: Any, names: tuple[str, ...]) -> None:
        """Stores ``stats/<name>/<stat>`` and ``stats/<name>/class_<stat>`` (float32, a class
        row at a time; rows of classes without examples stay NaN and take no file) and
        ``stats/class_count``, from merged :class:`~smoothkern.dataset.statistics.ClassStats`.
        """
        for stat, value in stats.finalize_total(names).items():
            data = value.to("cpu", torch.float32).numpy()
            self.group.create_array(f"stats/{name}/{stat}", shape=data.shape, dtype="float32",
                                    chunks=data.shape or None, overwrite=True)[...] = data
        shape = tuple(stats.shape)
        arrays = {stat: self.group.create_array(
            f"stats/{name}/class_{stat}", shape=(stats.classes, *shape), dtype="float32",
            chunks=(1, *shape), fill_value=float("nan"), overwrite=True) for stat in names}
        for c, values in stats.class_rows(names):
            for stat, value in values.items():
                arrays[stat][c] = value.to("cpu", torch.float32).numpy()
        counts = stats.counts().numpy()
        self.group.create_array("stats/class_count", shape=counts.shape, dtype="int64",
                                overwrite=True)[...] = counts

    def finish(self, **record: Any) -> None:
        """Marks the job finished (after its statistics are stored)."""
        self.record.update(plain(record), finished=True)
        self.group.attrs[ATTRS] = self.record

    @property
    def finished(self) -> bool:
        return bool(self.record.get("finished"))


# Maps and inputs are stored raw: compression kept most of the bytes of gradient-like maps and
# slowed the job's writes (benchmarks/RESULTS.md, "Data sets at ImageNet scale").
MAP_COMPRESSORS = None
# zarr skips writing a chunk that holds only the fill value; here every chunk file is kept, so
# that a chunk's files tell whether it was written.
KEEP_EVERY_CHUNK = {"write_empty_chunks": True}


def _create_complete(group: Any, chunks: int) -> None:
    # One chunk per record, stored raw: each rank's marks are files of their own.
    group.create_array("complete", shape=(chunks,), chunks=(1,), dtype="uint8", fill_value=0,
                       compressors=None)


def _canonical(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job record whose aggregates are a set: the same maps asked in another order are the
    same job."""
    job = dict(job)
    options = dict(job.get("options", {}))
    if isinstance(options.get("aggregate"), list):
        options["aggregate"] = sorted(options["aggregate"])
    job["options"] = options
    return job


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
