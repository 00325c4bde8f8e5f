"""Stored maps beside their images: rows = examples, columns = the image then one heatmap per
stored map (each aggregate; each snapshot and noise level of it)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..core.stats import PER_EXAMPLE_AGGREGATES
from .store import Store, StoreError


def show(path: str | os.PathLike, indices: Sequence[int], out: str | os.PathLike, *,
         aggregates: Sequence[str] | None = None, signed: bool = False) -> Path:
    """Draws the stored maps of examples ``indices`` and writes a PNG.

    The images come from the store's ``input`` array, or, for a store the command wrote, from
    its data source opened again.

    Raises:
        ValueError: an output name not ending in .png, not a store, an index out of range or
            not computed yet, an aggregate the store lacks, maps that are not images, or no way
            to get the images.
    """
    if Path(out).suffix.lower() != ".png":
        raise ValueError(f"show writes a PNG image: the output name must end in .png, got "
                         f"{Path(out).name!r}")
    store = Store.open(path, writable=False)
    indices = list(indices)
    n = store.n_examples
    bad = [i for i in indices if not 0 <= i < n]
    if not indices or bad:
        raise ValueError(f"indices must be within 0..{n - 1}, got {bad or 'none'}")
    complete = store.complete()
    missing = [i for i in indices if not complete[i // store.chunk_size]]
    if missing:
        raise ValueError(f"examples {missing} are not computed yet (resume the job first)")
    lost = sorted({i // store.chunk_size for i in indices
                   if not store.written(i // store.chunk_size)})
    if lost:
        raise StoreError(f"the files of chunk(s) {lost} are missing from the store {path} "
                         "(deleted?): resume the job (--resume) to compute them again")
    names = [a for a in store.aggregates if a not in PER_EXAMPLE_AGGREGATES]
    if aggregates:
        unknown = [a for a in aggregates if a not in names]
        if unknown:
            raise ValueError(f"the store has no maps {unknown}; it has {names}")
        names = list(aggregates)
    images = _images(store, indices)
    columns, titles = [], []
    layout = store.record["layout"]
    for name in names:
        maps = torch.from_numpy(store.read_rows(name, indices)).float()
        lead = int(layout.get("snapshots") is not None) + int(bool(layout.get("sweep")))
        leading, one_map = maps.shape[1:1 + lead], maps.shape[1 + lead:]
        if len(one_map) == 2:  # [H, W] maps (a CAM without channels)
            maps = maps.unsqueeze(-3)
        elif len(one_map) != 3:
            raise ValueError(f"show draws image maps [C, H, W]; this store's maps are "
                             f"{list(one_map)}")
        for position in itertools.product(*(range(s) for s in leading)):
            columns.append(maps[(slice(None), *position)])
            titles.append(_title(name, position, layout, store.record))
    target = store.read_rows("target", indices)
    label = store.read_rows("label", indices)
    rows = [f"#{i}: class {t}" + (f"\nlabel {y}" if y >= 0 else "")
            for i, t, y in zip(indices, target, label)]
    options = store.record["job"]["options"]
    method = options["method"] if isinstance(options["method"], str) else \
        options["method"].get("method", "method")
    from ..viz import attribution_grid, save_figure

    figure = attribution_grid(images, columns, titles, row_labels=rows, signed=signed,
                              title=f"{Path(path).name}: {method}, m = {options['n_samples']}")
    return save_figure(figure, out)


def _images(store: Store, indices: list[int]) -> Tensor:
    if "input" in store.group:
        return torch.from_numpy(store.read_rows("input", indices))
    meta = store.record.get("metadata") or {}
    if "data" not in meta or "channels" not in meta:
        raise StoreError("the store holds no images: it was written from Python without "
                         "store_inputs=True, so there is nothing to draw the maps beside")
    from ..models import InputSpec
    from .named_data import open_source

    n = store.n_examples
    source = open_source(meta["data"], InputSpec(meta["channels"], meta["size"]), limit=n,
                         resize=meta.get("resize"))
    _check_same_data(store, source, meta)
    return torch.stack([source.dataset[i][0] for i in indices])


def _check_same_data(store: Store, source, meta: dict) -> None:
    """Refuses a data source that no longer gives the examples the maps were computed from:
    a folder whose files changed, or other first or last examples."""
    from .indexed import data_fingerprint, indexed_data

    where = meta["data"]
    remedy = ("the maps would be drawn beside other images; restore the data, or write the "
              "store again with --store-inputs")
    if len(source.dataset) < store.n_examples:
        raise StoreError(f"the data source {where} now has {len(source.dataset)} examples, the "
                         f"store {store.n_examples}: {remedy}")
    if meta.get("listing") is not None and source.listing != meta["listing"]:
        raise StoreError(f"the data folder {where} changed since the store was written (images "
                         f"added, removed, renamed or rewritten among its first "
                         f"{store.n_examples}): {remedy}")
    stored = store.record["job"]["data"]["fingerprint"]
    if data_fingerprint(indexed_data(source.dataset, 1, 0)) != stored:
        raise StoreError(f"the data source {where} gives other examples than when the store "
                         f"was written (its first or last example changed): {remedy}")


def _title(name: str, position: tuple[int, ...], layout: dict, record: dict) -> str:
    parts = [name]
    rest = list(position)
    if layout.get("snapshots") is not None and rest:
        parts.append(f"m={layout['snapshots'][rest.pop(0)]}")
    if layout.get("sweep") and rest:
        level = rest.pop(0)
        options = record["job"]["options"]
        levels = options.get("noise_level") or options.get("stdevs")
        parts.append(f"σ={levels[level]}" if isinstance(levels, list) else f"level {level}")
    return " ".join(parts)
