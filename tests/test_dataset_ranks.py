"""How a data-set job talks between ranks: the collective GPU, control messages over gloo,
one DataLoader per run. CPU tests fake what needs a GPU; the `cuda` ones run it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import tiny_resnet
from torch.utils.data import TensorDataset

import smoothkern as sk
from smoothkern.dataset import distributed, indexed, open_store
from smoothkern.dataset.distributed import Ranks, collective_device

zarr = pytest.importorskip("zarr")

X = torch.rand(9, 1, 6, 6, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("local_rank, current, want", [("3", 0, 3), ("3", 2, 2), (None, 0, 0),
                                                       ("0", 0, 0)])
def test_the_collective_gpu_is_local_rank_unless_the_caller_chose_one(monkeypatch, local_rank,
                                                                      current, want):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    # no process group here: nothing is bound, so the rule above decides
    assert collective_device() == torch.device("cuda", want)


def test_control_messages_use_the_control_group_and_sums_the_jobs_group(monkeypatch):
    used = []

    def all_reduce(tensor, group=None):
        used.append((group, tensor.device.type))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    ranks = Ranks(rank=0, world=2, group="nccl-group", device=torch.device("cpu"),
                  control="gloo-group")
    ranks.round_done(3, False)
    ranks.sum(torch.zeros(4, dtype=torch.float64))
    assert used == [("gloo-group", "cpu"), ("nccl-group", "cpu")]


def test_one_dataloader_reads_every_chunk_of_a_run(monkeypatch, tmp_path):
    made = []

    class Counted(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(indexed, "DataLoader", Counted)
    run = sk.attribute_dataset(tiny_resnet(in_channels=1, classes=3), TensorDataset(X),
                               tmp_path / "s", n_samples=2, batch_size=2, chunk_size=3,
                               num_workers=1, progress=False)
    assert run.computed == 3 and len(made) == 1
    assert made[0]["prefetch_factor"] == indexed.PREFETCH_BATCHES and not made[0]["pin_memory"]


def _one_rank_group(tmp_path, backend, **kwargs):
    store = dist.FileStore(str(tmp_path / "rendezvous"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1, **kwargs)


@pytest.mark.cuda
def test_a_nccl_job_without_set_device_uses_local_rank_and_a_gloo_control_group(
        tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    model = tiny_resnet(in_channels=1, classes=3)
    sk.attribute_dataset(model, TensorDataset(X), tmp_path / "cpu", n_samples=3, chunk_size=4,
                         progress=False)
    _one_rank_group(tmp_path, "nccl")
    try:
        ranks = distributed.current_ranks()
        assert ranks.device == torch.device("cuda", 0)
        assert dist.get_backend(ranks.control) == "gloo"
        run = sk.attribute_dataset(model.cuda(), TensorDataset(X), tmp_path / "gpu",
                                   n_samples=3, chunk_size=4, progress=False)
        assert run.computed == 3
    finally:
        dist.destroy_process_group()
        distributed._CONTROL_GROUPS.clear()
    cpu, gpu = open_store(tmp_path / "cpu"), open_store(tmp_path / "gpu")
    np.testing.assert_allclose(gpu["mean"][:], cpu["mean"][:], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gpu["stats/mean/class_var"][:], cpu["stats/mean/class_var"][:],
                               rtol=1e-4, atol=1e-8)
